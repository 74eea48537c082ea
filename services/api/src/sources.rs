//! Sources and their sync runs: create (credentials checked against Confluence, then sealed),
//! list, request a sync, read its status, delete.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::Utc;
use pagestream_confluence::{
    Auth, ClientConfig, ConfluenceClient, ConfluenceError, CqlQuery, SpaceKey,
};
use pagestream_events::{
    Envelope, Retryable, RunPipeline, SourceKey, SyncMode, SyncProgress, SyncRequested, SyncStatus,
};
use pagestream_sources::{
    AuthKind, Credentials, MIN_WEBHOOK_SECRET_CHARS, Secret, SourceRecord, SourceSettings, Spaces,
};
use pagestream_store::runs;
use pagestream_store::sources as store_sources;
pub use pagestream_views::{
    SourceList, SourceRemoved, SourceView, StageCounts, SyncAccepted, SyncRunView, WebhookPath,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode, truncated};
use crate::params::{JsonFields, QueryParams};

/// Finds a source in the registry (the source of truth) by key or uuid.
pub(crate) async fn resolve(state: &AppState, id: &str) -> Result<SourceRecord, ApiError> {
    let registry = &state.inner.registry;
    let found = if let Ok(uuid) = Uuid::parse_str(id) {
        registry
            .list()
            .await
            .map_err(|e| ApiError::dependency("source registry", e))?
            .into_iter()
            .find(|record| record.id == uuid)
    } else if let Ok(key) = SourceKey::new(id) {
        registry
            .get(&key)
            .await
            .map_err(|e| ApiError::dependency("source registry", e))?
    } else {
        None
    };
    found.ok_or_else(|| ApiError::source_not_found(id))
}

/// The body of `POST /api/confluence/sources` (documentation only: the handler reads it field by
/// field to name the one at fault).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CreateSource {
    /// Slug `[a-z0-9][a-z0-9_-]{0,62}`; defaults to the lowercased (first) space key; required
    /// with `"spaces": "all"`.
    key: Option<String>,
    /// The wiki root, e.g. `https://example.atlassian.net/wiki` (https; http only for loopback).
    site_url: String,
    /// One space (or give `spaces`).
    space_key: Option<String>,
    /// Several space keys (`["ENG", "OPS"]`), or `"all"`: every space the credentials can read,
    /// found again at each sync.
    #[schema(value_type = Option<Object>)]
    spaces: Option<serde_json::Value>,
    auth: CreateSourceAuth,
    /// Shared secret of webhook deliveries, at least 24 characters.
    webhook_secret: Option<String>,
    /// The Connect app's `clientKey` from its installation: the issuer its JWTs must name.
    connect_client_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    settings: Option<SourceSettings>,
}

/// `{"kind": "cloud", "email", "api_token"}` or `{"kind": "data_center", "personal_access_token"}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CreateSourceAuth {
    kind: String,
    email: Option<String>,
    api_token: Option<String>,
    personal_access_token: Option<String>,
}

#[utoipa::path(
    post, path = "/api/confluence/sources", tag = "sources",
    request_body = CreateSource,
    responses(
        (status = 201, body = SourceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<SourceView>), ApiError> {
    let mut fields = JsonFields::parse(&body)?;
    let (spaces, spaces_field) = read_spaces(&mut fields)?;
    let key = match (fields.optional::<String>("key")?, spaces.keys()) {
        (Some(key), _) => key,
        (None, Some(keys)) => keys
            .first()
            .map(|k| k.to_ascii_lowercase())
            .unwrap_or_default(),
        (None, None) => return Err(ApiError::invalid("key", "is required with all spaces")),
    };
    let key = SourceKey::new(key.trim())
        .map_err(|_| ApiError::invalid("key", "must match [a-z0-9][a-z0-9_-]{0,62}"))?;
    if Uuid::parse_str(key.as_str()).is_ok() {
        return Err(ApiError::invalid(
            "key",
            "must not look like a uuid (sources are addressed by key or uuid)",
        ));
    }
    let site_url: String = fields.required("site_url")?;
    let mut auth_fields = fields
        .object("auth")?
        .ok_or_else(|| ApiError::invalid("auth", "is required"))?;
    let kind: String = auth_fields.required("kind")?;
    let (auth_kind, auth, credentials) = match kind.as_str() {
        "cloud" => {
            let email: String = auth_fields.required("email")?;
            let token: String = auth_fields.required("api_token")?;
            if !email.contains('@') || email.len() > 320 {
                return Err(ApiError::invalid("auth.email", "not an email address"));
            }
            if token.is_empty() || token.len() > 4096 {
                return Err(ApiError::invalid(
                    "auth.api_token",
                    "must be 1 to 4096 characters",
                ));
            }
            (
                AuthKind::Cloud,
                Auth::cloud(email.clone(), token.clone()),
                (Some(email), token),
            )
        }
        "data_center" => {
            let token: String = auth_fields.required("personal_access_token")?;
            if token.is_empty() || token.len() > 4096 {
                return Err(ApiError::invalid(
                    "auth.personal_access_token",
                    "must be 1 to 4096 characters",
                ));
            }
            (
                AuthKind::DataCenter,
                Auth::data_center(token.clone()),
                (None, token),
            )
        }
        _ => {
            return Err(ApiError::invalid(
                "auth.kind",
                "must be cloud or data_center",
            ));
        }
    };
    auth_fields.finish()?;
    let webhook_secret: Option<String> = fields.optional("webhook_secret")?;
    if let Some(secret) = &webhook_secret
        && !(MIN_WEBHOOK_SECRET_CHARS..=4096).contains(&secret.chars().count())
    {
        return Err(ApiError::invalid(
            "webhook_secret",
            format!("must be {MIN_WEBHOOK_SECRET_CHARS} to 4096 characters"),
        ));
    }
    let connect_client_key: Option<String> = fields.optional("connect_client_key")?;
    if let Some(client_key) = &connect_client_key
        && !(1..=256).contains(&client_key.len())
    {
        return Err(ApiError::invalid(
            "connect_client_key",
            "must be 1 to 256 characters",
        ));
    }
    let settings: SourceSettings = fields.optional("settings")?.unwrap_or_default();
    validate_settings(&settings)?;
    fields.finish()?;

    if state
        .inner
        .registry
        .get(&key)
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?
        .is_some()
    {
        return Err(ApiError::new(
            ErrorCode::SourceAlreadyExists,
            format!("a source with key {:?} already exists", key.as_str()),
        )
        .with_field("key"));
    }

    let site_url = check_credentials(
        &site_url,
        auth,
        (&spaces, spaces_field),
        state.inner.confluence_timeout,
    )
    .await?;

    let now = Utc::now();
    let credentials = Credentials {
        email: credentials.0,
        token: Secret::new(credentials.1),
        webhook_secret: webhook_secret.map(Secret::new),
        connect_client_key,
        webhook_path_secret: None,
    };
    let record = SourceRecord {
        id: Uuid::new_v4(),
        key,
        site_url,
        spaces,
        auth_kind,
        sealed_credentials: SourceRecord::seal_credentials(&state.inner.secret_key, &credentials),
        settings,
        created_at: now,
        updated_at: now,
    };
    state
        .inner
        .registry
        .put(&record)
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?;
    tracing::info!(source = %record.key, id = %record.id, spaces = %record.spaces, "source created");
    Ok((StatusCode::CREATED, Json(view_unprojected(record))))
}

fn validate_settings(settings: &SourceSettings) -> Result<(), ApiError> {
    if !(settings.requests_per_second > 0.0 && settings.requests_per_second <= 1000.0) {
        return Err(ApiError::invalid(
            "settings.requests_per_second",
            "must be above 0 and at most 1000",
        ));
    }
    if !(1..=64).contains(&settings.concurrent_requests) {
        return Err(ApiError::invalid(
            "settings.concurrent_requests",
            "must be from 1 to 64",
        ));
    }
    if let Some(zone) = &settings.cql_time_zone
        && pagestream_confluence::UserTimeZone::parse(zone).is_err()
    {
        return Err(ApiError::invalid(
            "settings.cql_time_zone",
            "must be an IANA time zone name such as Europe/Berlin",
        ));
    }
    if settings.incremental_interval_secs != 0 && settings.incremental_interval_secs < 60 {
        return Err(ApiError::invalid(
            "settings.incremental_interval_secs",
            "must be 0 (off) or at least 60",
        ));
    }
    Ok(())
}

/// The spaces of a source's body: `space_key` (one), or `spaces` (a list of keys, or `"all"`);
/// with the field that gave them.
fn read_spaces(fields: &mut JsonFields) -> Result<(Spaces, &'static str), ApiError> {
    let one: Option<String> = fields.optional("space_key")?;
    let many: Option<serde_json::Value> = fields.optional("spaces")?;
    let invalid =
        || ApiError::invalid("spaces", "must be \"all\" or a list of 1 to 100 space keys");
    let keys = match (one, many) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "spaces",
                "give space_key or spaces, not both",
            ));
        }
        (Some(key), None) => vec![(key, "space_key")],
        (None, Some(serde_json::Value::String(all))) if all == "all" => {
            return Ok((Spaces::All, "spaces"));
        }
        (None, Some(serde_json::Value::Array(keys))) if (1..=100).contains(&keys.len()) => keys
            .into_iter()
            .map(|key| match key {
                serde_json::Value::String(key) => Ok((key, "spaces")),
                _ => Err(invalid()),
            })
            .collect::<Result<_, _>>()?,
        (None, Some(_)) => return Err(invalid()),
        (None, None) => return Err(ApiError::invalid("space_key", "is required")),
    };
    let mut spaces: Vec<String> = Vec::with_capacity(keys.len());
    let mut given_in = "space_key";
    for (key, field) in keys {
        given_in = field;
        let key = SpaceKey::new(key.trim())
            .map_err(|_| ApiError::invalid(field, "not a Confluence space key"))?;
        if !spaces.iter().any(|k| k.eq_ignore_ascii_case(key.as_str())) {
            spaces.push(key.as_str().to_owned());
        }
    }
    Ok((Spaces::Keys(spaces), given_in))
}

/// A client for one request or a few, made on an operator's behalf: the api's timeout, one retry.
pub(crate) fn confluence_client(
    site_url: &str,
    auth: Auth,
    timeout: Duration,
) -> Result<ConfluenceClient, ConfluenceError> {
    let mut config = ClientConfig::new(site_url, auth);
    config.timeout = timeout;
    config.connect_timeout = timeout.min(Duration::from_secs(5));
    config.retry.max_attempts = 2;
    ConfluenceClient::new(config)
}

/// Asks Confluence whether the credentials can see the spaces (or list spaces at all, for every
/// space); returns the normalised wiki root.
async fn check_credentials(
    site_url: &str,
    auth: Auth,
    (spaces, field): (&Spaces, &'static str),
    timeout: Duration,
) -> Result<String, ApiError> {
    let cloud = matches!(auth, Auth::Cloud { .. });
    let client = confluence_client(site_url, auth, timeout).map_err(|error| match error {
        ConfluenceError::Config(reason) if reason.starts_with("credentials") => {
            ApiError::invalid("auth", reason)
        }
        other => ApiError::invalid("site_url", other.to_string()),
    })?;
    let keys: Vec<SpaceKey> = spaces
        .keys()
        .unwrap_or_default()
        .iter()
        .filter_map(|key| SpaceKey::new(key.clone()).ok())
        .collect();
    // The first space the credentials cannot see, or whether they can list spaces at all.
    let mut checked: Result<(), (ConfluenceError, Option<&SpaceKey>)> = Ok(());
    if keys.is_empty() {
        checked = client
            .spaces(None, !cloud)
            .next_page()
            .await
            .map(|_| ())
            .map_err(|error| (error, None));
    }
    for space in &keys {
        let found = if cloud {
            client.space_by_key(space).await.map(|_| ())
        } else {
            // Data Center has no v2 API: a one-result CQL search proves the token and the space.
            let cql = CqlQuery::pages_in_space(space.clone()).to_string();
            match client.search(&cql, &[], 1).next_page().await {
                Ok(Some(hits)) if !hits.is_empty() => Ok(()),
                Ok(_) => Err(ConfluenceError::NotFound {
                    endpoint: "GET /rest/api/content/search".into(),
                }),
                Err(error) => Err(error),
            }
        };
        if let Err(error) = found {
            checked = Err((error, Some(space)));
            break;
        }
    }
    match checked {
        Ok(()) => Ok(client.base_url().as_str().trim_end_matches('/').to_owned()),
        Err((error, space)) => {
            tracing::warn!(%error, "confluence refused the source");
            Err(match error {
                ConfluenceError::Unauthorized { .. } | ConfluenceError::Forbidden { .. } => {
                    ApiError::new(
                        ErrorCode::ConfluenceCredentialsRejected,
                        "confluence rejected the credentials",
                    )
                    .with_field("auth")
                }
                ConfluenceError::NotFound { .. } => ApiError::new(
                    ErrorCode::ConfluenceSpaceNotFound,
                    match space {
                        Some(space) => format!(
                            "confluence has no space {:?} that these credentials can see",
                            space.as_str()
                        ),
                        None => "confluence lists no spaces for these credentials".to_owned(),
                    },
                )
                .with_field(field),
                other if other.is_transient() => ApiError::new(
                    ErrorCode::ConfluenceUnavailable,
                    format!("confluence is unavailable: {other}"),
                ),
                other => ApiError::new(
                    ErrorCode::ConfluenceUnavailable,
                    format!("confluence answered unexpectedly: {other}"),
                )
                .with_field("site_url"),
            })
        }
    }
}

fn view_unprojected(record: SourceRecord) -> SourceView {
    SourceView {
        next_sync_at: record.next_sync_at(Utc::now()),
        id: record.id,
        key: record.key.to_string(),
        site_url: record.site_url,
        space_key: record.spaces.to_string(),
        spaces: record.spaces,
        auth_kind: record.auth_kind.as_str().to_owned(),
        settings: record.settings,
        created_at: record.created_at,
        updated_at: record.updated_at,
        pages: 0,
        chunks: 0,
        projected: false,
        last_sync: None,
    }
}

fn run_view(run: runs::SyncRun, source: &str) -> SyncRunView {
    let counts = run.counts;
    let counts = StageCounts {
        seen: counts.seen,
        changed: counts.changed,
        deleted: counts.deleted,
        converted: counts.converted,
        embedded: counts.embedded,
        indexed: counts.indexed,
        failed: counts.failed,
    };
    let pipeline = pipeline_of(run.status, &counts);
    SyncRunView {
        run_id: run.id,
        source: source.to_owned(),
        mode: run.mode,
        status: run.status,
        pipeline,
        pipeline_label: pipeline.to_string(),
        counts,
        confluence_requests: run.confluence_requests,
        rate_limit_wait_ms: run.rate_limit_wait_ms,
        started_at: run.started_at,
        finished_at: run.finished_at,
        last_error: run.last_error,
        updated_at: run.updated_at,
    }
}

/// A source's latest runs, newest first.
pub(crate) async fn recent_runs(
    state: &AppState,
    source_id: Uuid,
    key: &str,
    limit: i64,
) -> Result<Vec<SyncRunView>, ApiError> {
    let runs = runs::recent(&state.inner.pool, source_id, limit).await?;
    Ok(runs.into_iter().map(|run| run_view(run, key)).collect())
}

fn pipeline_of(status: SyncStatus, counts: &StageCounts) -> RunPipeline {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    RunPipeline::of(
        status,
        count(counts.changed),
        count(counts.indexed),
        count(counts.failed),
    )
}

fn progress_view(progress: SyncProgress) -> SyncRunView {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let pipeline = RunPipeline::of(
        progress.status,
        progress.pages_changed,
        0,
        progress.pages_failed,
    );
    SyncRunView {
        run_id: progress.run_id,
        source: progress.source.to_string(),
        mode: progress.mode,
        status: progress.status,
        pipeline,
        pipeline_label: pipeline.to_string(),
        counts: StageCounts {
            seen: clamp(progress.pages_seen),
            changed: clamp(progress.pages_changed),
            deleted: clamp(progress.pages_deleted),
            failed: clamp(progress.pages_failed),
            ..StageCounts::default()
        },
        confluence_requests: clamp(progress.requests),
        rate_limit_wait_ms: clamp(progress.rate_limit_wait_ms),
        started_at: progress.started_at,
        finished_at: progress.finished_at,
        last_error: progress.last_error,
        updated_at: progress.updated_at,
    }
}

#[utoipa::path(
    get, path = "/api/confluence/sources", tag = "sources",
    responses((status = 200, body = SourceList), (status = 401, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<SourceList>, ApiError> {
    let records = state
        .inner
        .registry
        .list()
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?;
    Ok(Json(SourceList {
        sources: views(&state, records).await?,
    }))
}

/// One source's view, by key or id (its counts and last run read for it alone).
pub(crate) async fn view(state: &AppState, id: &str) -> Result<SourceView, ApiError> {
    let record = resolve(state, id).await?;
    views(state, vec![record])
        .await?
        .pop()
        .ok_or_else(|| ApiError::source_not_found(id))
}

/// The views of registry records: their projected counts and last runs.
async fn views(state: &AppState, records: Vec<SourceRecord>) -> Result<Vec<SourceView>, ApiError> {
    let ids: Vec<Uuid> = records.iter().map(|record| record.id).collect();
    let counts =
        store_sources::counts(&state.inner.pool, &ids, &state.inner.search.embedding_model).await?;
    let counts: HashMap<Uuid, (i64, i64)> = counts
        .into_iter()
        .map(|(id, pages, chunks)| (id, (pages, chunks)))
        .collect();
    let mut runs: HashMap<Uuid, runs::SyncRun> = runs::latest_per_source(&state.inner.pool, &ids)
        .await?
        .into_iter()
        .map(|run| (run.source_id, run))
        .collect();
    let sources = records
        .into_iter()
        .map(|record| {
            let id = record.id;
            let key = record.key.to_string();
            let mut view = view_unprojected(record);
            if let Some((pages, chunks)) = counts.get(&id) {
                view.pages = *pages;
                view.chunks = *chunks;
                view.projected = true;
            }
            view.last_sync = runs.remove(&id).map(|run| run_view(run, &key));
            view
        })
        .collect();
    Ok(sources)
}

#[utoipa::path(
    post, path = "/api/confluence/{id}/sync", tag = "sources",
    params(
        ("id" = String, Path, description = "source key or uuid"),
        ("mode" = Option<String>, Query, description = "incremental (default) or full"),
        ("reconcile_deletions" = Option<bool>, Query, description = "diff the full id listing even on an incremental sync"),
    ),
    responses(
        (status = 202, body = SyncAccepted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn sync(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<SyncAccepted>), ApiError> {
    let mut params = QueryParams::parse(query.as_deref())?;
    let mode = params
        .text("mode", 20)?
        .map(|mode| mode.parse::<SyncMode>())
        .transpose()
        .map_err(|_| ApiError::invalid("mode", "must be incremental or full"))?
        .unwrap_or(SyncMode::Incremental);
    let reconcile_deletions = params.boolean("reconcile_deletions")?.unwrap_or(false);
    params.finish()?;
    let record = resolve(&state, &id).await?;
    let now = Utc::now();
    let request = SyncRequested {
        source: record.key.clone(),
        run_id: Uuid::new_v4(),
        mode,
        reconcile_deletions,
        requested_at: now,
    };
    let mut envelope = Envelope::new(request.clone());
    envelope.extensions.syncrun = Some(request.run_id);
    // Progress first: whoever reads the status right after sees the run as queued.
    let queued = SyncProgress::new(
        record.key.clone(),
        request.run_id,
        mode,
        SyncStatus::Queued,
        now,
    );
    let bus = &state.inner.bus;
    bus.publish_progress(&queued)
        .await
        .map_err(|e| ApiError::dependency("nats", e))?;
    bus.publish(&envelope)
        .await
        .map_err(|e| ApiError::dependency("nats", e))?;
    tracing::info!(source = %record.key, run_id = %request.run_id, %mode, "sync requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncAccepted {
            run_id: request.run_id,
            source: record.key.to_string(),
            mode,
            status: queued.status,
            status_url: format!(
                "/api/confluence/{}/status?run={}",
                record.key, request.run_id
            ),
        }),
    ))
}

#[utoipa::path(
    get, path = "/api/confluence/{id}/status", tag = "sources",
    params(
        ("id" = String, Path, description = "source key or uuid"),
        ("run" = Option<Uuid>, Query, description = "a run id (default: the source's latest run)"),
    ),
    responses(
        (status = 200, body = SyncRunView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<SyncRunView>, ApiError> {
    let mut params = QueryParams::parse(query.as_deref())?;
    let run = params
        .text("run", 40)?
        .map(|run| Uuid::parse_str(&run).map_err(|_| ApiError::invalid("run", "not a uuid")))
        .transpose()?;
    params.finish()?;
    let record = resolve(&state, &id).await?;
    let key = record.key.to_string();
    let projected = match run {
        Some(run) => runs::get(&state.inner.pool, record.id, run).await?,
        None => runs::latest(&state.inner.pool, record.id).await?,
    };
    if let Some(row) = projected {
        return Ok(Json(run_view(row, &key)));
    }
    // Not projected yet (just queued, or the indexer lags): the progress stream knows.
    if let Some(run) = run
        && let Some(progress) = state
            .inner
            .bus
            .latest_progress(&record.key, run)
            .await
            .map_err(|e| ApiError::dependency("nats", e))?
    {
        return Ok(Json(progress_view(progress)));
    }
    Err(ApiError::new(
        ErrorCode::SyncRunNotFound,
        match run {
            Some(run) => format!("source {key:?} has no sync run {run}"),
            None => format!("source {key:?} has no sync run yet"),
        },
    ))
}

#[utoipa::path(
    delete, path = "/api/confluence/{id}", tag = "sources",
    params(("id" = String, Path, description = "source key or uuid")),
    responses(
        (status = 202, body = SourceRemoved),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SourceRemoved>), ApiError> {
    let record = resolve(&state, &id).await?;
    state
        .inner
        .registry
        .remove(&record.key)
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?;
    state
        .inner
        .bus
        .purge_source(&record.key)
        .await
        .map_err(|e| ApiError::dependency("nats", e))?;
    tracing::info!(source = %record.key, id = %record.id, "source removed");
    Ok((
        StatusCode::ACCEPTED,
        Json(SourceRemoved {
            id: record.id,
            key: record.key.to_string(),
            status: "removing".to_owned(),
        }),
    ))
}

/// A source key or uuid from a path, as the projection's id (for reads that need no registry).
pub(crate) async fn projected_source_id(
    state: &AppState,
    id: &str,
    field: &str,
) -> Result<Uuid, ApiError> {
    let pool = &state.inner.pool;
    let found: Option<Uuid> = match Uuid::parse_str(id) {
        Ok(uuid) => store_sources::exists(pool, uuid).await?.then_some(uuid),
        Err(_) => store_sources::id_by_key(pool, id).await?,
    };
    found.ok_or_else(|| ApiError::source_not_found(&truncated(id)).with_field(field))
}

/// The credentials of a stored source, opened, and what its Confluence client authenticates with.
pub(crate) fn credentials_of(
    state: &AppState,
    record: &SourceRecord,
) -> Result<(Credentials, Auth), ApiError> {
    record
        .credentials(&state.inner.secret_key)
        .and_then(|credentials| {
            let auth = record.confluence_auth(&credentials)?;
            Ok((credentials, auth))
        })
        .map_err(|e| ApiError::dependency("source registry", e))
}

/// The body of `PATCH /api/confluence/{id}` (documentation only).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UpdateSource {
    /// One space (or give `spaces`).
    space_key: Option<String>,
    /// Several space keys, or `"all"`.
    #[schema(value_type = Option<Object>)]
    spaces: Option<serde_json::Value>,
}

#[utoipa::path(
    patch, path = "/api/confluence/{id}", tag = "sources",
    params(("id" = String, Path, description = "source key or uuid")),
    request_body = UpdateSource,
    responses(
        (status = 200, body = SourceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Changes a source's spaces (checked against Confluence with its stored credentials): the next
/// sync syncs a space added whole and removes the pages of one taken off.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<SourceView>, ApiError> {
    let mut fields = JsonFields::parse(&body)?;
    let (spaces, spaces_field) = read_spaces(&mut fields)?;
    fields.finish()?;
    let mut record = resolve(&state, &id).await?;
    let (_, auth) = credentials_of(&state, &record)?;
    check_credentials(
        &record.site_url,
        auth,
        (&spaces, spaces_field),
        state.inner.confluence_timeout,
    )
    .await?;
    record.spaces = spaces;
    record.updated_at = Utc::now();
    state
        .inner
        .registry
        .put(&record)
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?;
    tracing::info!(source = %record.key, spaces = %record.spaces, "source updated");
    view(&state, record.key.as_str()).await.map(Json)
}

#[utoipa::path(
    post, path = "/api/confluence/{id}/webhook-path", tag = "sources",
    params(("id" = String, Path, description = "source key or uuid")),
    responses(
        (status = 200, body = WebhookPath),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Sets a new path secret for Cloud's unsigned site-admin webhooks (the first, or a rotation):
/// the ingester accepts the new path as soon as it sees the registry change and refuses the
/// old one. The path is answered this once.
pub async fn rotate_webhook_path(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookPath>, ApiError> {
    let mut record = resolve(&state, &id).await?;
    let mut credentials = record
        .credentials(&state.inner.secret_key)
        .map_err(|e| ApiError::dependency("source registry", e))?;
    let secret = Secret::generate_path_secret();
    let path = format!("/webhooks/confluence/{}/p/{}", record.key, secret.expose());
    credentials.webhook_path_secret = Some(secret);
    record.sealed_credentials =
        SourceRecord::seal_credentials(&state.inner.secret_key, &credentials);
    record.updated_at = Utc::now();
    state
        .inner
        .registry
        .put(&record)
        .await
        .map_err(|e| ApiError::dependency("source registry", e))?;
    tracing::info!(source = %record.key, "webhook path secret set");
    Ok(Json(WebhookPath {
        key: record.key.to_string(),
        path,
    }))
}
