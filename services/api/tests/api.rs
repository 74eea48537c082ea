//! The api over the dev stack's NATS and Postgres (one fresh database and subject root per test),
//! with the Confluence simulator standing in for Confluence.

mod api {
    pub mod search;
    pub mod sources;
    pub mod support;
    pub mod ui;
    pub mod webhooks;
}

use api::support;
