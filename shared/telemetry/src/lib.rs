//! Tracing, OpenTelemetry export, health and metrics endpoints.
