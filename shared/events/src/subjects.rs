//! Subjects (DESIGN §2): `<root>.<event>.<source>.<page>` for page events and
//! `<root>.sync.requested.<source>` for sync commands. The root is `pagestream` in production; tests
//! give each case its own root so that they can share one server.

use crate::{EventError, PageId, SourceKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    SyncRequested,
    PageHinted,
    PageChanged,
    PageConverted,
    ChunksReady,
    PageDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::SyncRequested,
        EventKind::PageHinted,
        EventKind::PageChanged,
        EventKind::PageConverted,
        EventKind::ChunksReady,
        EventKind::PageDeleted,
    ];

    /// The event's name as it appears in subjects: two tokens, e.g. `page.changed`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SyncRequested => "sync.requested",
            EventKind::PageHinted => "page.hinted",
            EventKind::PageChanged => "page.changed",
            EventKind::PageConverted => "page.converted",
            EventKind::ChunksReady => "chunks.ready",
            EventKind::PageDeleted => "page.deleted",
        }
    }

    /// The CloudEvents `type` this version of Pagestream emits.
    pub fn event_type(self) -> String {
        format!("io.pagestream.{}.v1", self.name())
    }

    /// Parses a CloudEvents `type`, accepting every version this build understands.
    pub fn from_event_type(event_type: &str) -> Result<Self, EventError> {
        let unknown = || EventError::UnknownType(event_type.chars().take(120).collect());
        let rest = event_type
            .strip_prefix("io.pagestream.")
            .ok_or_else(unknown)?;
        let (name, version) = rest.rsplit_once('.').ok_or_else(unknown)?;
        if version != "v1" {
            return Err(unknown());
        }
        Self::from_name(name).ok_or_else(unknown)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the event is about one page (and so has a page token in its subject).
    pub fn is_page_event(self) -> bool {
        !matches!(self, EventKind::SyncRequested)
    }
}

/// What a subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject {
    pub kind: EventKind,
    pub source: SourceKey,
    pub page: Option<PageId>,
}

/// Builds and parses subjects under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    root: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            root: "pagestream".to_owned(),
        }
    }
}

impl Subjects {
    /// A root is one subject token: lowercase letters, digits, `-` and `_`.
    pub fn with_root(root: impl Into<String>) -> Result<Self, EventError> {
        let root = root.into();
        if root.is_empty()
            || root.len() > 40
            || !root
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(EventError::InvalidIdentifier {
                what: "subject root",
                value: root,
            });
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn page(&self, kind: EventKind, source: &SourceKey, page: &PageId) -> String {
        format!("{}.{}.{source}.{page}", self.root, kind.name())
    }

    pub fn sync_requested(&self, source: &SourceKey) -> String {
        format!("{}.{}.{source}", self.root, EventKind::SyncRequested.name())
    }

    /// The subject of an event: the page subject for page events, the source's otherwise.
    pub fn for_event(&self, kind: EventKind, source: &SourceKey, page: Option<&PageId>) -> String {
        match page {
            Some(page) if kind.is_page_event() => self.page(kind, source, page),
            _ => self.sync_requested(source),
        }
    }

    /// Every subject of one kind: `<root>.page.changed.>`.
    pub fn all_of(&self, kind: EventKind) -> String {
        format!("{}.{}.>", self.root, kind.name())
    }

    /// Every subject of one kind for one source.
    pub fn all_of_source(&self, kind: EventKind, source: &SourceKey) -> String {
        if kind.is_page_event() {
            format!("{}.{}.{source}.*", self.root, kind.name())
        } else {
            self.sync_requested(source)
        }
    }

    /// Subjects of the bus's own records (dead letters, sync progress) under this root.
    pub fn internal(&self, name: &str) -> String {
        format!("{}.{name}", self.root)
    }

    pub fn parse(&self, subject: &str) -> Result<ParsedSubject, EventError> {
        let invalid = || EventError::InvalidSubject(subject.chars().take(200).collect());
        let rest = subject
            .strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or_else(invalid)?;
        let tokens: Vec<&str> = rest.split('.').collect();
        let (kind, source, page) = match tokens.as_slice() {
            [a, b, source] => (
                EventKind::from_name(&format!("{a}.{b}")).ok_or_else(invalid)?,
                *source,
                None,
            ),
            [a, b, source, page] => (
                EventKind::from_name(&format!("{a}.{b}")).ok_or_else(invalid)?,
                *source,
                Some(*page),
            ),
            _ => return Err(invalid()),
        };
        if kind.is_page_event() != page.is_some() {
            return Err(invalid());
        }
        Ok(ParsedSubject {
            kind,
            source: SourceKey::new(source)?,
            page: page.map(PageId::new).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let subjects = Subjects::default();
        let source = SourceKey::new("eng").expect("source");
        let page = PageId::new("65601").expect("page");
        for kind in EventKind::ALL {
            let subject = subjects.for_event(kind, &source, Some(&page));
            let parsed = subjects.parse(&subject).expect("parse");
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.source, source);
            assert_eq!(parsed.page.is_some(), kind.is_page_event());
        }
        assert_eq!(
            subjects.page(EventKind::ChunksReady, &source, &page),
            "pagestream.chunks.ready.eng.65601"
        );
        assert_eq!(
            subjects.sync_requested(&source),
            "pagestream.sync.requested.eng"
        );
    }

    #[test]
    fn rejects_foreign_and_malformed_subjects() {
        let subjects = Subjects::default();
        for bad in [
            "other.page.changed.eng.1",
            "pagestream.page.changed.eng",
            "pagestream.sync.requested.eng.1",
            "pagestream.page.exploded.eng.1",
            "pagestream.page.changed.ENG.1",
            "pagestream.page.changed.eng.x1",
        ] {
            assert!(subjects.parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn event_types_are_versioned() {
        assert_eq!(
            EventKind::PageChanged.event_type(),
            "io.pagestream.page.changed.v1"
        );
        assert_eq!(
            EventKind::from_event_type("io.pagestream.chunks.ready.v1").expect("known"),
            EventKind::ChunksReady
        );
        assert!(EventKind::from_event_type("io.pagestream.chunks.ready.v9").is_err());
        assert!(EventKind::from_event_type("com.example.page.changed.v1").is_err());
    }
}
