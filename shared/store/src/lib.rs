//! Postgres projection schema: migrations and connection.
