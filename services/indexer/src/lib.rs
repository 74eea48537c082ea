//! Indexer: projects the event streams into Postgres.
