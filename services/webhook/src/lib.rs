//! Webhook ingester: Confluence webhooks in, page hints out.
