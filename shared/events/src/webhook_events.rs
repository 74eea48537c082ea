//! The Confluence webhook events Pagestream acts on, and the hint each becomes. One table: the
//! webhook ingester maps deliveries by it, and the api registers webhooks for exactly these events.

use crate::HintReason;

/// Every event that becomes a `page.hinted`, with the hint's reason; any other event is ignored.
pub const WEBHOOK_EVENTS: &[(&str, HintReason)] = &[
    ("page_created", HintReason::Changed),
    ("page_updated", HintReason::Changed),
    ("page_restored", HintReason::Changed),
    // A move and a label change create no version: the fetcher compares where the page stands and
    // its labels.
    ("page_moved", HintReason::Changed),
    ("label_added", HintReason::Changed),
    ("label_removed", HintReason::Changed),
    ("blog_created", HintReason::Changed),
    ("blog_updated", HintReason::Changed),
    ("blog_restored", HintReason::Changed),
    // A comment is part of its page's searchable content: the fetcher fetches the page's comments
    // again (a removed comment included) and compares them with what it emitted.
    ("comment_created", HintReason::Changed),
    ("comment_updated", HintReason::Changed),
    ("comment_removed", HintReason::Changed),
    // So is an attachment's text: the fetcher lists the page's attachments again (a removed or
    // trashed one leaves them) and extracts what changed.
    ("attachment_created", HintReason::Changed),
    ("attachment_updated", HintReason::Changed),
    ("attachment_removed", HintReason::Changed),
    ("attachment_restored", HintReason::Changed),
    ("attachment_trashed", HintReason::Changed),
    // The fetcher confirms with Confluence before it emits `page.deleted`.
    ("page_trashed", HintReason::Removed),
    ("page_removed", HintReason::Removed),
    ("blog_trashed", HintReason::Removed),
    ("blog_removed", HintReason::Removed),
];

/// The hint a webhook event asks for; `None` for an event Pagestream ignores.
pub fn webhook_hint(event: &str) -> Option<HintReason> {
    WEBHOOK_EVENTS
        .iter()
        .find(|(name, _)| *name == event)
        .map(|(_, reason)| *reason)
}
