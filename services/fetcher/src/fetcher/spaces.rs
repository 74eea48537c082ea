//! The spaces of a source: which ones a run syncs, and whether a page's space is one of them.

use std::collections::BTreeSet;

use pagestream_confluence::{ConfluenceClient, SpaceId, SpaceKey};
use pagestream_sources::Spaces;

use super::{Run, Site, Tree};
use crate::FetcherError;
use crate::state::PageRecord;

impl Run<'_> {
    /// The keys of the source's spaces that Confluence shows the credentials now: those listed
    /// (a listed space that is gone or out of sight is left out, so its pages are reconciled
    /// away), or every space they can read.
    pub(super) async fn resolve_spaces(&mut self) -> Result<BTreeSet<String>, FetcherError> {
        let keys = match &self.site.spaces {
            Spaces::Keys(keys) => Some(
                keys.iter()
                    .map(|key| SpaceKey::new(key.clone()))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Spaces::All => None,
        };
        let mut found = BTreeSet::new();
        let mut listing = self.client.spaces(keys.as_deref(), self.site.data_center);
        while let Some(batch) = listing.next_page().await? {
            found.extend(batch.into_iter().map(|space| space.key));
        }
        for missing in keys
            .iter()
            .flatten()
            .filter(|key| !found.iter().any(|k| k.eq_ignore_ascii_case(key.as_str())))
        {
            tracing::warn!(source = %self.site.source, space = %missing, "the source's space is gone or out of the credentials' sight: its pages are removed");
        }
        Ok(found)
    }

    /// Makes `space` the one the run lists and searches.
    pub(super) fn enter_space(&mut self, space: &str) {
        self.site.space_key = space.to_owned();
        self.site.space_id = None;
    }

    /// Emits what changed in the whole current space (Data Center: one search with bodies, 50
    /// pages a request, having no bulk bodies by id); returns what it listed.
    pub(super) async fn sync_whole_space(
        &mut self,
        known: &std::collections::HashMap<pagestream_events::PageId, PageRecord>,
    ) -> Result<Tree, FetcherError> {
        if self.site.data_center {
            let everything = pagestream_confluence::CqlQuery::content_in_space(self.space_key()?);
            self.search_and_emit(&everything, known).await
        } else {
            self.list_and_fetch(known).await
        }
    }
}

/// Whether the space of v2 id `id` is one of the source's (Cloud pages name their space by id).
pub(super) async fn covers_space_id(
    client: &ConfluenceClient,
    site: &Site,
    id: &SpaceId,
) -> Result<bool, FetcherError> {
    let Spaces::Keys(keys) = &site.spaces else {
        return Ok(true);
    };
    let keys = keys
        .iter()
        .map(|key| SpaceKey::new(key.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut listing = client.spaces(Some(&keys), false);
    while let Some(batch) = listing.next_page().await? {
        if batch.iter().any(|space| space.id == *id) {
            return Ok(true);
        }
    }
    Ok(false)
}
