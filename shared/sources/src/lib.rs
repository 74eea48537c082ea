//! Confluence sources: their definition, their sealed credentials, and the registry that holds them.
//!
//! The registry is a JetStream key-value bucket (`<ROOT>_SOURCES`, one entry per source key): the
//! api writes it, the fetcher and the webhook ingester read credentials from it, and the indexer
//! projects it into the `sources` table. Keeping sources in NATS makes a replay rebuild them too.
//!
//! Credentials (API token or personal access token, webhook secrets) are sealed with
//! ChaCha20-Poly1305 under a 32-byte key from the environment (`PAGESTREAM_SECRET_KEY`) and are only
//! opened where they are used. [`Secret`] never prints its value.

use std::fmt;

use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pagestream_bus::Bus;
use pagestream_confluence::Auth;
use pagestream_events::SourceKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid secret key: {0}")]
    InvalidKey(&'static str),
    #[error("credentials cannot be opened (wrong PAGESTREAM_SECRET_KEY, or tampered)")]
    Unseal,
    #[error("source registry: {0}")]
    Registry(String),
    #[error("source record {key:?} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A secret string: its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh secret for a URL's path: 48 hex digits (192 random bits).
    pub fn generate_path_secret() -> Self {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The key that seals credentials at rest.
#[derive(Clone)]
pub struct SecretKey(Key);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl std::str::FromStr for SecretKey {
    type Err = SourceError;
    fn from_str(encoded: &str) -> Result<Self, Self::Err> {
        Self::parse(encoded)
    }
}

impl SecretKey {
    /// Parses a key given as base64 (or 64 hex digits) of 32 bytes.
    pub fn parse(encoded: &str) -> Result<Self, SourceError> {
        let encoded = encoded.trim();
        let bytes = if encoded.len() == 64 && encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&encoded[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SourceError::InvalidKey("not hex"))?
        } else {
            STANDARD
                .decode(encoded)
                .map_err(|_| SourceError::InvalidKey("not base64 or hex"))?
        };
        if bytes.len() != 32 {
            return Err(SourceError::InvalidKey("must be 32 bytes"));
        }
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// A fresh random key, base64-encoded (for `.env` files and tests).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// Seals `plaintext`: base64 of nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(&self.0);
        // Encryption only fails for plaintexts beyond 256 GiB.
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        STANDARD.encode(sealed)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SourceError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SourceError::Unseal)?;
        if bytes.len() < 12 + 16 {
            return Err(SourceError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SourceError::Unseal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Confluence Cloud: Basic `email:api_token`.
    Cloud,
    /// Confluence Data Center: personal access token (Bearer).
    DataCenter,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Cloud => "cloud",
            AuthKind::DataCenter => "data_center",
        }
    }
}

/// Shortest webhook secret a source may have: HMAC and the Automation token are only as strong as
/// the secret.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 24;

/// A source's secrets, sealed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The Cloud account's email (Basic auth user); none for Data Center.
    #[serde(default)]
    pub email: Option<String>,
    /// Cloud API token or Data Center personal access token.
    pub token: Secret,
    /// Shared secret of Data Center webhooks (`X-Hub-Signature`), of the Cloud Connect app (JWT), or
    /// of Automation deliveries (header).
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// The Connect app's `clientKey` (from its installation): the only issuer accepted on Connect
    /// JWTs. Without it, JWT deliveries are refused.
    #[serde(default)]
    pub connect_client_key: Option<String>,
    /// Secret in the path of the URL that Cloud's site-admin webhooks deliver to (unsigned):
    /// `/webhooks/confluence/<key>/p/<secret>/<event>`. At least
    /// [`MIN_WEBHOOK_SECRET_CHARS`]; rotating it replaces the URL.
    #[serde(default)]
    pub webhook_path_secret: Option<Secret>,
}

/// How a source is synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceSettings {
    /// Seconds between scheduled incremental syncs: the safety net under lossy webhooks (0: off).
    pub incremental_interval_secs: u64,
    /// Seconds between deletion reconciliations (a full id listing); a week by default.
    pub reconcile_interval_secs: u64,
    /// The Confluence API user's time zone (an IANA name), in which CQL dates are read: set it
    /// only where Confluence does not say it (Data Center; a Cloud profile that hides it). By
    /// default the fetcher reads it from the user's profile before each incremental run.
    pub cql_time_zone: Option<String>,
    /// Client-side limits on Confluence requests.
    pub requests_per_second: f64,
    pub concurrent_requests: usize,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            incremental_interval_secs: 900,
            reconcile_interval_secs: 7 * 24 * 3600,
            cql_time_zone: None,
            requests_per_second: 10.0,
            concurrent_requests: 4,
        }
    }
}

/// The spaces a source covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spaces {
    /// These space keys (at least one).
    Keys(Vec<String>),
    /// Every space the source's credentials can read, as each sync finds them.
    All,
}

impl Spaces {
    /// One space.
    pub fn one(key: impl Into<String>) -> Self {
        Self::Keys(vec![key.into()])
    }

    /// Whether a page of space `key` belongs to the source (space keys compare as Confluence
    /// compares them, ignoring ASCII case).
    pub fn covers(&self, key: &str) -> bool {
        match self {
            Self::Keys(keys) => keys.iter().any(|own| own.eq_ignore_ascii_case(key)),
            Self::All => true,
        }
    }

    /// The listed keys; none for every space.
    pub fn keys(&self) -> Option<&[String]> {
        match self {
            Self::Keys(keys) => Some(keys),
            Self::All => None,
        }
    }
}

impl fmt::Display for Spaces {
    /// `ENG, OPS` or `all spaces`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keys(keys) => f.write_str(&keys.join(", ")),
            Self::All => f.write_str("all spaces"),
        }
    }
}

/// Reads the spaces of a record: written before sources had several, a record names one
/// `space_key`.
fn stored_spaces<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Spaces, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Spaces(Spaces),
        One(String),
    }
    Ok(match Stored::deserialize(deserializer)? {
        Stored::Spaces(spaces) => spaces,
        Stored::One(key) => Spaces::one(key),
    })
}

/// A source as the registry stores it: everything but the credentials in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub id: Uuid,
    pub key: SourceKey,
    pub site_url: String,
    #[serde(alias = "space_key", deserialize_with = "stored_spaces")]
    pub spaces: Spaces,
    pub auth_kind: AuthKind,
    /// [`Credentials`] as JSON, sealed with the [`SecretKey`].
    pub sealed_credentials: String,
    #[serde(default)]
    pub settings: SourceSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SourceRecord {
    pub fn credentials(&self, key: &SecretKey) -> Result<Credentials, SourceError> {
        let plaintext = key.open(&self.sealed_credentials)?;
        serde_json::from_slice(&plaintext).map_err(|_| SourceError::Unseal)
    }

    /// What a Confluence client of this source authenticates with, from its opened credentials.
    pub fn confluence_auth(&self, credentials: &Credentials) -> Result<Auth, SourceError> {
        let token = credentials.token.expose();
        match (self.auth_kind, &credentials.email) {
            (AuthKind::Cloud, Some(email)) => Ok(Auth::cloud(email.clone(), token)),
            (AuthKind::Cloud, None) => Err(SourceError::Corrupt {
                key: self.key.to_string(),
                reason: "cloud source has no account email".into(),
            }),
            (AuthKind::DataCenter, _) => Ok(Auth::data_center(token)),
        }
    }

    pub fn seal_credentials(key: &SecretKey, credentials: &Credentials) -> String {
        // Serializing a struct of strings cannot fail.
        key.seal(&serde_json::to_vec(credentials).unwrap_or_default())
    }

    /// Seconds between the source's scheduled syncs: its incremental interval, or where that is
    /// off, its reconciliation interval (a scheduled incremental run reconciles when that is due);
    /// none when both are off.
    fn schedule_interval(&self) -> Option<i64> {
        [
            self.settings.incremental_interval_secs,
            self.settings.reconcile_interval_secs,
        ]
        .into_iter()
        .find(|interval| *interval > 0)
        .and_then(|interval| i64::try_from(interval).ok())
    }

    /// The slot of the source's schedule at `at`: slots are one interval long and phased by the
    /// source's id, so that sources added together do not all sync at the same second.
    pub fn schedule_slot(&self, at: DateTime<Utc>) -> Option<i64> {
        let interval = self.schedule_interval()?;
        let phase = (self.id.as_u128() % interval as u128) as i64;
        Some((at.timestamp() - phase).div_euclid(interval))
    }

    /// When the scheduled sync after `at` is due.
    pub fn next_sync_at(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let interval = self.schedule_interval()?;
        let phase = (self.id.as_u128() % interval as u128) as i64;
        let slot = self.schedule_slot(at)?;
        DateTime::from_timestamp((slot + 1) * interval + phase, 0)
    }

    /// The run id of a slot's scheduled sync: the same for every replica that schedules it.
    pub fn scheduled_run_id(&self, slot: i64) -> Uuid {
        Uuid::new_v5(&self.id, format!("scheduled-sync|{slot}").as_bytes())
    }
}

/// A change to the registry, as a watcher sees it.
#[derive(Debug, Clone)]
pub enum SourceChange {
    Upserted(Box<SourceRecord>),
    Removed(SourceKey),
}

/// The source registry: a key-value bucket on the bus.
#[derive(Clone)]
pub struct SourceRegistry {
    store: kv::Store,
}

fn registry_error(error: impl fmt::Display) -> SourceError {
    SourceError::Registry(error.to_string())
}

impl SourceRegistry {
    /// Opens the registry, creating its bucket if needed.
    pub async fn open(bus: &Bus) -> Result<Self, SourceError> {
        let store = bus
            .key_value("SOURCES", "confluence sources (credentials sealed)")
            .await
            .map_err(registry_error)?;
        Ok(Self { store })
    }

    pub async fn put(&self, record: &SourceRecord) -> Result<(), SourceError> {
        let value = serde_json::to_vec(record).map_err(registry_error)?;
        self.store
            .put(record.key.as_str(), Bytes::from(value))
            .await
            .map_err(registry_error)?;
        Ok(())
    }

    pub async fn get(&self, key: &SourceKey) -> Result<Option<SourceRecord>, SourceError> {
        match self.store.get(key.as_str()).await.map_err(registry_error)? {
            Some(value) => decode(key.as_str(), &value).map(Some),
            None => Ok(None),
        }
    }

    pub async fn remove(&self, key: &SourceKey) -> Result<(), SourceError> {
        self.store.purge(key.as_str()).await.map_err(registry_error)
    }

    pub async fn list(&self) -> Result<Vec<SourceRecord>, SourceError> {
        let mut keys = self.store.keys().await.map_err(registry_error)?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(registry_error)?;
            if let Some(value) = self.store.get(&key).await.map_err(registry_error)? {
                records.push(decode(&key, &value)?);
            }
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    /// Every current source, then every change as it happens.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<SourceChange, SourceError>> + use<>, SourceError>
    {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(registry_error)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(registry_error)?;
            match entry.operation {
                kv::Operation::Put => decode(&entry.key, &entry.value)
                    .map(|record| SourceChange::Upserted(Box::new(record))),
                kv::Operation::Delete | kv::Operation::Purge => SourceKey::new(entry.key.clone())
                    .map(SourceChange::Removed)
                    .map_err(|error| SourceError::Corrupt {
                        key: entry.key,
                        reason: error.to_string(),
                    }),
            }
        }))
    }
}

fn decode(key: &str, value: &[u8]) -> Result<SourceRecord, SourceError> {
    serde_json::from_slice(value).map_err(|error| SourceError::Corrupt {
        key: key.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_their_key() {
        let key = SecretKey::parse(&SecretKey::generate()).expect("key");
        let credentials = Credentials {
            email: Some("ops@example.com".into()),
            token: Secret::new("ATATT3xFfGF0-very-secret"),
            webhook_secret: None,
            connect_client_key: None,
            webhook_path_secret: None,
        };
        let sealed = SourceRecord::seal_credentials(&key, &credentials);
        assert!(!sealed.contains("very-secret"));
        let record = SourceRecord {
            id: Uuid::new_v4(),
            key: SourceKey::new("eng").expect("key"),
            site_url: "https://example.atlassian.net".into(),
            spaces: Spaces::one("ENG"),
            auth_kind: AuthKind::Cloud,
            sealed_credentials: sealed,
            settings: SourceSettings::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert_eq!(record.credentials(&key).expect("open"), credentials);
        let other = SecretKey::parse(&SecretKey::generate()).expect("key");
        assert!(matches!(
            record.credentials(&other),
            Err(SourceError::Unseal)
        ));
        assert!(!format!("{credentials:?}").contains("very-secret"));
        assert_eq!(
            record.confluence_auth(&credentials).expect("auth"),
            Auth::cloud("ops@example.com", "ATATT3xFfGF0-very-secret")
        );
        let no_email = Credentials {
            email: None,
            ..credentials.clone()
        };
        assert!(matches!(
            record.confluence_auth(&no_email),
            Err(SourceError::Corrupt { .. })
        ));
        let data_center = SourceRecord {
            auth_kind: AuthKind::DataCenter,
            ..record.clone()
        };
        assert_eq!(
            data_center.confluence_auth(&no_email).expect("auth"),
            Auth::data_center("ATATT3xFfGF0-very-secret")
        );
        assert!(
            !serde_json::to_string(&record)
                .expect("json")
                .contains("very-secret")
        );
    }

    #[test]
    fn a_record_of_one_space_key_reads_as_a_list_of_one_and_lists_and_all_round_trip() {
        // As records were stored before sources had several spaces.
        let stored = r#"{"id": "6f1c3c1e-8f0e-4a57-9a55-0c2f4c1f2a10", "key": "eng",
            "site_url": "https://x.atlassian.net/wiki", "space_key": "ENG", "auth_kind": "cloud",
            "sealed_credentials": "", "created_at": "2026-11-22T10:00:00Z",
            "updated_at": "2026-11-22T10:00:00Z"}"#;
        let record: SourceRecord = serde_json::from_str(stored).expect("an old record");
        assert_eq!(record.spaces, Spaces::one("ENG"));
        assert!(record.spaces.covers("eng") && !record.spaces.covers("OPS"));
        for spaces in [Spaces::Keys(vec!["ENG".into(), "OPS".into()]), Spaces::All] {
            let json = serde_json::to_string(&SourceRecord {
                spaces: spaces.clone(),
                ..record.clone()
            })
            .expect("json");
            let read: SourceRecord = serde_json::from_str(&json).expect("read back");
            assert_eq!(read.spaces, spaces, "{json}");
        }
        assert!(Spaces::All.covers("ANY"));
        assert_eq!(
            Spaces::Keys(vec!["ENG".into(), "OPS".into()]).to_string(),
            "ENG, OPS"
        );
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretKey::parse(&"ab".repeat(32)).is_ok());
        assert!(SecretKey::parse("c2hvcnQ=").is_err());
        assert!(SecretKey::parse("not a key").is_err());
    }

    #[test]
    fn scheduled_slots_are_one_interval_long_and_phased_by_the_source() {
        let record = |id: u128, incremental: u64| SourceRecord {
            id: Uuid::from_u128(id),
            key: SourceKey::new("eng").expect("key"),
            site_url: "https://x.atlassian.net/wiki".into(),
            spaces: Spaces::one("ENG"),
            auth_kind: AuthKind::Cloud,
            sealed_credentials: String::new(),
            settings: SourceSettings {
                incremental_interval_secs: incremental,
                ..SourceSettings::default()
            },
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let at = DateTime::from_timestamp(1_000_000, 0).expect("time");
        let source = record(100, 900);
        let slot = source.schedule_slot(at).expect("scheduled");
        let next = source.next_sync_at(at).expect("next");
        assert!(next > at && next - at <= chrono::Duration::seconds(900));
        assert_eq!(source.schedule_slot(next), Some(slot + 1));
        assert_eq!(
            source.schedule_slot(next - chrono::Duration::seconds(1)),
            Some(slot)
        );
        assert_ne!(
            source.scheduled_run_id(slot),
            source.scheduled_run_id(slot + 1)
        );
        assert_eq!(
            source.scheduled_run_id(slot),
            record(100, 900).scheduled_run_id(slot)
        );
        // Another source's phase differs; both intervals off: no schedule.
        assert_ne!(record(101, 900).next_sync_at(at), Some(next));
        let mut off = record(100, 0);
        off.settings.reconcile_interval_secs = 0;
        assert_eq!(off.next_sync_at(at), None);
        // Incremental syncs off: the reconciliation interval paces the schedule.
        assert!(
            record(100, 0).next_sync_at(at).expect("next") - at > chrono::Duration::seconds(900)
        );
    }
}
