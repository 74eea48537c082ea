//! How each event changes the projection. Every function is idempotent and version-guarded (the
//! store's writes are), so events may arrive in any order, twice, or from a replay, and the
//! result is the same:
//!
//! - a page's row moves only forward: an event older than the stored `version` changes nothing;
//! - a deleted page stays deleted until an event of a strictly newer version, or of the same
//!   version and a later incarnation (a restore), arrives;
//! - a deletion of version 0 (the fetcher never knew the version) deletes whatever is stored;
//! - a page's chunks for a model are replaced in one statement group inside the caller's
//!   transaction, so readers see the old set or the new one.
//! - of two statements of one fact (the same event id: same version, incarnation and placement),
//!   the first stays, as in the streams, whose publish guard refuses the second: a replay then
//!   builds what the live indexer built.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pagestream_events::{
    ChunksReady, Envelope, PageChanged, PageConverted, PageDeleted, SourceKey, SyncProgress,
};
use pagestream_store::{StoreError, chunks, pages, runs, sources};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The source is not (yet) in the `sources` table: the registry projection will bring it.
    #[error("unknown source {0}")]
    UnknownSource(SourceKey),
    /// The event was fetched for another source under the same key (one removed and added
    /// again): a late event of the removed one, or one of the new one before its projection.
    #[error("event of another source {key} ({event_source}) than the projected one")]
    OtherSource { key: SourceKey, event_source: Uuid },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl pagestream_events::Retryable for ProjectionError {
    /// An unknown source or a database outage may pass; an invalid event or data the database
    /// refuses will not.
    fn is_transient(&self) -> bool {
        match self {
            ProjectionError::UnknownSource(_) | ProjectionError::OtherSource { .. } => true,
            ProjectionError::Database(error) => pagestream_store::is_transient(error),
            ProjectionError::Store(error) => error.is_transient(),
        }
    }
}

/// Maps source keys to ids, caching what the database said.
#[derive(Clone, Default)]
pub struct SourceIds(Arc<Mutex<HashMap<SourceKey, Uuid>>>);

impl SourceIds {
    pub async fn resolve(
        &self,
        conn: &mut PgConnection,
        key: &SourceKey,
    ) -> Result<Uuid, ProjectionError> {
        if let Some(id) = self.0.lock().ok().and_then(|ids| ids.get(key).copied()) {
            return Ok(id);
        }
        let id = sources::id_by_key(&mut *conn, key.as_str())
            .await?
            .ok_or_else(|| ProjectionError::UnknownSource(key.clone()))?;
        if let Ok(mut ids) = self.0.lock() {
            ids.insert(key.clone(), id);
        }
        Ok(id)
    }

    /// The source's id when the event was fetched for it (or does not say for which source).
    async fn resolve_for(
        &self,
        conn: &mut PgConnection,
        key: &SourceKey,
        event_source: Option<Uuid>,
    ) -> Result<Uuid, ProjectionError> {
        let id = self.resolve(conn, key).await?;
        match event_source {
            Some(event_source) if event_source != id => {
                // The cache may hold the removed source's id: ask the database once more.
                self.forget(key);
                let id = self.resolve(conn, key).await?;
                if event_source == id {
                    Ok(id)
                } else {
                    Err(ProjectionError::OtherSource {
                        key: key.clone(),
                        event_source,
                    })
                }
            }
            _ => Ok(id),
        }
    }

    /// A write that found its source's row gone was applied with the id of a source removed
    /// meanwhile: the registry then tells whether to wait for a source added again or drop it.
    fn source_gone(&self, key: &SourceKey, error: StoreError) -> ProjectionError {
        if error.is_missing_reference() {
            self.forget(key);
            ProjectionError::UnknownSource(key.clone())
        } else {
            error.into()
        }
    }

    pub fn forget(&self, key: &SourceKey) {
        if let Ok(mut ids) = self.0.lock() {
            ids.remove(key);
        }
    }
}

/// Whether an event changed the projection (a stale or repeated one does not).
pub type Applied = bool;

pub async fn apply_changed(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageChanged>,
) -> Result<Applied, ProjectionError> {
    let page = &event.data.page;
    let source_id = ids.resolve_for(conn, &page.source, page.source_id).await?;
    pages::upsert(conn, source_id, page, None)
        .await
        .map_err(|error| ids.source_gone(&page.source, error))
}

pub async fn apply_converted(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageConverted>,
) -> Result<Applied, ProjectionError> {
    let page = &event.data.page;
    let source_id = ids.resolve_for(conn, &page.source, page.source_id).await?;
    pages::upsert(conn, source_id, page, Some(&event.data))
        .await
        .map_err(|error| ids.source_gone(&page.source, error))
}

pub async fn apply_chunks(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<ChunksReady>,
) -> Result<Applied, ProjectionError> {
    let data = &event.data;
    let source_id = ids.resolve_for(conn, &data.source, data.source_id).await?;
    chunks::replace(conn, source_id, data)
        .await
        .map_err(|error| ids.source_gone(&data.source, error))
}

pub async fn apply_deleted(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageDeleted>,
) -> Result<Applied, ProjectionError> {
    let data = &event.data;
    let source_id = ids.resolve_for(conn, &data.source, data.source_id).await?;
    pages::tombstone(
        conn,
        source_id,
        data.page_id.as_str(),
        data.space_key.as_deref(),
        data.version,
        data.incarnation,
    )
    .await
    .map_err(|error| ids.source_gone(&data.source, error))
}

/// Projects a sync run's progress snapshot.
pub async fn apply_progress(
    conn: &mut PgConnection,
    ids: &SourceIds,
    progress: &SyncProgress,
) -> Result<Applied, ProjectionError> {
    let source_id = ids.resolve(conn, &progress.source).await?;
    runs::apply_progress(conn, source_id, progress)
        .await
        .map_err(|error| ids.source_gone(&progress.source, error))
}

/// Projects one registry entry into `sources`.
pub async fn upsert_source(
    pool: &PgPool,
    record: &pagestream_sources::SourceRecord,
) -> Result<(), ProjectionError> {
    let row = sources::SourceRow {
        id: record.id,
        key: record.key.as_str(),
        site_url: &record.site_url,
        space_key: &record.spaces.to_string(),
        auth_kind: record.auth_kind.as_str(),
        sealed_credentials: record.sealed_credentials.as_bytes(),
        settings: serde_json::to_value(&record.settings).unwrap_or_default(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    };
    Ok(sources::upsert(pool, &row).await?)
}

/// Removes a source; its pages, chunks and runs go with it (cascade).
pub async fn remove_source(
    pool: &PgPool,
    ids: &SourceIds,
    key: &SourceKey,
) -> Result<(), ProjectionError> {
    sources::remove(pool, key.as_str()).await?;
    ids.forget(key);
    Ok(())
}
