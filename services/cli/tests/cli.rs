//! The `pagestream` CLI against the whole pipeline, every service in-process over the dev stack's
//! NATS and Postgres, with the Confluence simulator.

mod cli {
    mod browser;
    mod commands;
    mod end_to_end;
    mod mcp;
    mod stack;
    mod webhooks;
}
