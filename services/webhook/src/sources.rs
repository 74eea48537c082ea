//! The sources the ingester knows, with their webhook secrets opened once, kept in memory and in
//! step with the registry (a KV watch), so that no request reads the bucket.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use pagestream_events::SourceKey;
use pagestream_sources::{
    Secret, SecretKey, SourceChange, SourceError, SourceRecord, SourceRegistry,
};
use tokio_util::sync::CancellationToken;

/// What the ingester needs of a source.
#[derive(Debug, Clone)]
pub struct WebhookSource {
    /// `None` when the source has none, or its credentials cannot be opened: its deliveries are
    /// rejected.
    pub secret: Option<Secret>,
    /// The Connect app's client key: the issuer its JWTs must name.
    pub connect_client_key: Option<String>,
    /// The secret in the path of Cloud's unsigned site-admin webhook deliveries.
    pub path_secret: Option<Secret>,
}

/// Known sources by key.
#[derive(Debug, Clone, Default)]
pub struct SourceCache {
    sources: Arc<RwLock<HashMap<SourceKey, Arc<WebhookSource>>>>,
}

impl SourceCache {
    /// Loads every source now.
    pub async fn load(registry: &SourceRegistry, key: &SecretKey) -> Result<Self, SourceError> {
        let cache = Self::default();
        cache.replace_all(registry.list().await?, key);
        Ok(cache)
    }

    pub fn get(&self, source: &SourceKey) -> Option<Arc<WebhookSource>> {
        self.sources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(source)
            .cloned()
    }

    /// Follows the registry until `cancel` fires. A broken watch is opened again, and the watch
    /// replays the current state first, so nothing is missed in between.
    pub async fn follow(
        self,
        registry: SourceRegistry,
        key: SecretKey,
        cancel: CancellationToken,
        on_removed: impl Fn(&SourceKey) + Send,
    ) -> Result<(), SourceError> {
        loop {
            let watched = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                result = self.watch_once(&registry, &key, &on_removed) => result,
            };
            match watched {
                Ok(()) => tracing::warn!("source registry watch ended; watching again"),
                Err(error) => {
                    tracing::warn!(%error, "source registry watch failed; watching again")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn watch_once(
        &self,
        registry: &SourceRegistry,
        key: &SecretKey,
        on_removed: &impl Fn(&SourceKey),
    ) -> Result<(), SourceError> {
        let mut changes = registry.watch().await?;
        while let Some(change) = changes.next().await {
            match change {
                Ok(SourceChange::Upserted(record)) => self.upsert(&record, key),
                Ok(SourceChange::Removed(source)) => {
                    self.write().remove(&source);
                    on_removed(&source);
                    tracing::info!(%source, "source removed");
                }
                // One unreadable record must not hide the others.
                Err(error) => tracing::warn!(%error, "skipping an unreadable source record"),
            }
        }
        Ok(())
    }

    fn replace_all(&self, records: Vec<SourceRecord>, key: &SecretKey) {
        let sources = records
            .iter()
            .map(|record| (record.key.clone(), Arc::new(open(record, key))))
            .collect();
        *self.write() = sources;
    }

    fn upsert(&self, record: &SourceRecord, key: &SecretKey) {
        self.write()
            .insert(record.key.clone(), Arc::new(open(record, key)));
        tracing::debug!(source = %record.key, "source updated");
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SourceKey, Arc<WebhookSource>>> {
        self.sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn open(record: &SourceRecord, key: &SecretKey) -> WebhookSource {
    match record.credentials(key) {
        Ok(credentials) => WebhookSource {
            secret: credentials.webhook_secret,
            connect_client_key: credentials.connect_client_key,
            path_secret: credentials.webhook_path_secret,
        },
        Err(error) => {
            tracing::warn!(source = %record.key, %error, "webhooks of this source will be rejected");
            WebhookSource {
                secret: None,
                connect_client_key: None,
                path_secret: None,
            }
        }
    }
}
