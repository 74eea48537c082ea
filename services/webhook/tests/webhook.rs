//! The webhook ingester against a real NATS server (the dev stack), each test under its own subject
//! root, requests sent in-process to the router.

#[path = "webhook/harness.rs"]
mod harness;

#[path = "webhook/auth.rs"]
mod auth;
#[path = "webhook/limits.rs"]
mod limits;
#[path = "webhook/payloads.rs"]
mod payloads;
