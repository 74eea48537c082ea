//! Sources: the cards, the add-source form, a source's page with its live run, sync and remove.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use pagestream_events::{SyncMode, SyncStatus};
use serde_json::{Map, Value, json};

use super::html::{self, Field, Nav, enc, esc, page};
use super::{Session, UiError, UiState, form_value, redirect};
use crate::error::ApiError;
use crate::sources::{self as api, SourceView, SyncRunView};

/// Last run in words: mode, pipeline state, fetch status and when.
fn run_line(run: &SyncRunView) -> String {
    format!(
        r#"{mode} sync <strong class="state state-{state}">{label}</strong> <span class="muted">(fetch {status})</span>, started {started}"#,
        mode = run.mode,
        state = esc(&state_name(run)),
        label = esc(&run.pipeline_label),
        status = run.status,
        started = html::time(run.started_at),
    )
}

fn state_name(run: &SyncRunView) -> String {
    serde_json::to_value(run.pipeline)
        .ok()
        .and_then(|value| value["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How far behind Confluence the source is: the time since its last finished run started.
fn behind(source: &SourceView) -> String {
    match &source.last_sync {
        Some(run) if run.pipeline.is_finished() && run.status == SyncStatus::Completed => format!(
            "{} behind",
            html::span((Utc::now() - run.started_at).num_seconds())
        ),
        Some(run) if run.pipeline.is_finished() => "the last run failed".to_owned(),
        Some(_) => "a run is under way".to_owned(),
        None => "never synced".to_owned(),
    }
}

fn next_run(source: &SourceView) -> String {
    let interval = source.settings.incremental_interval_secs;
    let every = format!("scheduled every {}", html::span(interval as i64));
    match source.next_sync_at {
        Some(at) if interval > 0 => format!("{every}, next {}", html::time(at)),
        // Reconciliation alone is scheduled.
        Some(at) => format!("next scheduled run {}", html::time(at)),
        None if interval == 0 => "no scheduled runs".to_owned(),
        None => every,
    }
}

fn sync_buttons(session: &Session, key: &str) -> String {
    let csrf = html::csrf_field(session);
    let key = enc(key);
    format!(
        r#"<form method="post" action="/sources/{key}/sync" class="inline">{csrf}<input type="hidden" name="mode" value="incremental"><button type="submit">Sync now</button></form>
<form method="post" action="/sources/{key}/sync" class="inline">{csrf}<input type="hidden" name="mode" value="full"><button type="submit" class="secondary">Full sync</button></form>
<a class="button danger" href="/sources/{key}/remove">Remove…</a>"#
    )
}

pub async fn list(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let sources = api::list(State(state.app.clone()))
        .await
        .map_err(|e| UiError::new(e, &session))?
        .0
        .sources;
    let mut body = String::from(
        r#"<div class="title-row"><h1>Sources</h1><a class="button" href="/sources/new">Add a source</a></div>"#,
    );
    if sources.is_empty() {
        body.push_str(r#"<p class="empty">No sources yet. <a href="/sources/new">Add a Confluence space</a> to start.</p>"#);
    }
    body.push_str(r#"<ul class="cards">"#);
    for source in &sources {
        let last = source
            .last_sync
            .as_ref()
            .map_or_else(|| "no run yet".to_owned(), run_line);
        body.push_str(&format!(
            r#"<li class="card source" data-source="{key_attr}">
<h2><a href="/sources/{key_path}">{key}</a> <span class="muted">space {space}</span></h2>
<p class="site">{site}</p>
<dl class="figures"><div><dt>Pages</dt><dd>{pages}</dd></div><div><dt>Chunks</dt><dd>{chunks}</dd></div></dl>
<p>Last run: {last}</p>
<p>{next} · {behind}</p>
<div class="actions">{buttons}</div>
</li>"#,
            key_attr = esc(&source.key),
            key_path = enc(&source.key),
            key = esc(&source.key),
            space = esc(&source.space_key),
            site = esc(&source.site_url),
            pages = source.pages,
            chunks = source.chunks,
            next = next_run(source),
            behind = esc(&behind(source)),
            buttons = sync_buttons(&session, &source.key),
        ));
    }
    body.push_str("</ul>");
    Ok(Html(page("Sources", Some(&session), Nav::Sources, &body)))
}

/// What the add-source form was given, to show it again (secrets never).
#[derive(Default)]
struct SourceForm {
    kind: String,
    key: String,
    site_url: String,
    spaces: String,
    all_spaces: bool,
    email: String,
    incremental_interval_secs: String,
}

impl SourceForm {
    fn read(body: &[u8]) -> Self {
        let value = |name| form_value(body, name).unwrap_or_default();
        Self {
            kind: value("auth.kind"),
            key: value("key"),
            site_url: value("site_url"),
            spaces: value("spaces"),
            all_spaces: form_value(body, "all_spaces").is_some(),
            email: value("auth.email"),
            incremental_interval_secs: value("settings.incremental_interval_secs"),
        }
    }
}

fn source_form(session: &Session, form: &SourceForm, error: Option<&ApiError>) -> String {
    let field_error = |names: &[&str]| {
        error.and_then(|error| {
            error
                .field
                .as_deref()
                .filter(|field| names.contains(field))
                .map(|_| error.message.as_str())
        })
    };
    let known_fields = [
        "key",
        "site_url",
        "spaces",
        "space_key",
        "auth",
        "auth.kind",
        "auth.email",
        "auth.api_token",
        "auth.personal_access_token",
        "webhook_secret",
        "settings.incremental_interval_secs",
    ];
    // An error of no field (or of one this form does not show) goes on top.
    let summary = match error {
        Some(error)
            if !error
                .field
                .as_deref()
                .is_some_and(|field| known_fields.contains(&field)) =>
        {
            format!(r#"<p class="error" role="alert">{}</p>"#, esc(&error.message))
        }
        Some(_) => r#"<p class="error" role="alert">The source was not added: see the fields marked below.</p>"#.to_owned(),
        None => String::new(),
    };
    let data_center = form.kind == "data_center";
    let credentials_error = field_error(&["auth"]);
    let field = |name, label, kind, value, hint, error, required| {
        Field {
            name,
            label,
            kind,
            value,
            hint,
            error,
            required,
        }
        .render()
    };
    format!(
        r#"<h1>Add a source</h1>{summary}
<form method="post" action="/sources/new" class="card form" id="source-form" novalidate>
{csrf}
<fieldset><legend>Confluence</legend>
<div class="choice" role="radiogroup" aria-label="Deployment">
<label><input type="radio" name="auth.kind" value="cloud"{cloud_checked}> Cloud</label>
<label><input type="radio" name="auth.kind" value="data_center"{dc_checked}> Data Center</label>
</div>{kind_error}
{site}{spaces}<div class="choice"><label><input type="checkbox" name="all_spaces" value="1"{all_checked}> All spaces the credentials can read</label></div>{key}
</fieldset>
<fieldset data-kind="cloud"><legend>Cloud credentials</legend>{email}{token}</fieldset>
<fieldset data-kind="data_center"><legend>Data Center credentials</legend>{pat}</fieldset>
{credentials}
<fieldset><legend>Webhooks and schedule</legend>{webhook}{interval}</fieldset>
<div class="actions"><button type="submit">Check and add</button> <a href="/sources">Cancel</a></div>
</form>"#,
        csrf = html::csrf_field(session),
        cloud_checked = if data_center { "" } else { " checked" },
        dc_checked = if data_center { " checked" } else { "" },
        kind_error = field_error(&["auth.kind"])
            .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
            .unwrap_or_default(),
        site = field(
            "site_url",
            "Site URL",
            "url",
            form.site_url.as_str(),
            "Cloud: https://your-site.atlassian.net/wiki. Data Center: the base URL.",
            field_error(&["site_url"]),
            true
        ),
        spaces = field(
            "spaces",
            "Space keys",
            "text",
            form.spaces.as_str(),
            "One or more, separated by commas: ENG, OPS. Or tick all spaces below.",
            field_error(&["spaces", "space_key"]),
            false
        ),
        all_checked = if form.all_spaces { " checked" } else { "" },
        key = field(
            "key",
            "Source key (optional)",
            "text",
            form.key.as_str(),
            "A short slug for the source; the first space key in lower case by default (required with all spaces).",
            field_error(&["key"]),
            false
        ),
        email = field(
            "auth.email",
            "E-mail",
            "email",
            form.email.as_str(),
            "",
            field_error(&["auth.email"]),
            false
        ),
        token = field(
            "auth.api_token",
            "API token",
            "password",
            "",
            "From id.atlassian.com → Security → API tokens. It is stored sealed and never shown again.",
            field_error(&["auth.api_token"]),
            false
        ),
        pat = field(
            "auth.personal_access_token",
            "Personal access token",
            "password",
            "",
            "It is stored sealed and never shown again.",
            field_error(&["auth.personal_access_token"]),
            false
        ),
        credentials = credentials_error
            .map(|e| format!(
                r#"<p class="error" id="credentials-error" role="alert">{}</p>"#,
                esc(e)
            ))
            .unwrap_or_default(),
        webhook = field(
            "webhook_secret",
            "Webhook secret (optional)",
            "password",
            "",
            "The shared secret Confluence signs webhook deliveries with.",
            field_error(&["webhook_secret"]),
            false
        ),
        interval = field(
            "settings.incremental_interval_secs",
            "Incremental sync interval (seconds)",
            "number",
            form.incremental_interval_secs.as_str(),
            "0 turns scheduled syncs off; otherwise at least 60. Default 900.",
            field_error(&["settings.incremental_interval_secs"]),
            false
        ),
    )
}

pub async fn new_form(Extension(session): Extension<Session>) -> Html<String> {
    let form = SourceForm {
        kind: "cloud".into(),
        ..SourceForm::default()
    };
    Html(page(
        "Add a source",
        Some(&session),
        Nav::Sources,
        &source_form(&session, &form, None),
    ))
}

/// The form as the api's create body: the same field names, dotted for nested ones.
fn create_body(body: &[u8]) -> Result<Value, ApiError> {
    let mut root = Map::new();
    let mut auth = Map::new();
    let mut settings = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        let name = name.to_string();
        match name.as_str() {
            "csrf" => {}
            "auth.kind" | "auth.email" => {
                auth.insert(name[5..].to_owned(), Value::String(value));
            }
            "key" | "site_url" | "webhook_secret" => {
                root.insert(name, Value::String(value));
            }
            // The api's `spaces`: a list of keys, or "all".
            "spaces" => {
                let keys: Vec<Value> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|key| !key.is_empty())
                    .map(|key| Value::String(key.to_owned()))
                    .collect();
                if form_value(body, "all_spaces").is_some() {
                    return Err(ApiError::invalid(
                        "spaces",
                        "give space keys or tick all spaces, not both",
                    ));
                }
                root.insert(name, Value::Array(keys));
            }
            "all_spaces" => {
                root.insert("spaces".into(), json!("all"));
            }
            "settings.incremental_interval_secs" => {
                let seconds: u64 = value.parse().map_err(|_| {
                    ApiError::invalid(name.as_str(), "must be a whole number of seconds")
                })?;
                settings.insert("incremental_interval_secs".into(), json!(seconds));
            }
            _ => {}
        }
    }
    // Only the token of the chosen kind is sent.
    let kind = auth
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("cloud")
        .to_owned();
    let token_field = if kind == "data_center" {
        auth.remove("email");
        "auth.personal_access_token"
    } else {
        "auth.api_token"
    };
    if let Some(token) = form_value(body, token_field).filter(|t| !t.trim().is_empty()) {
        auth.insert(
            token_field[5..].to_owned(),
            Value::String(token.trim().to_owned()),
        );
    }
    root.insert("auth".into(), Value::Object(auth));
    if !settings.is_empty() {
        let mut defaults = serde_json::to_value(pagestream_sources::SourceSettings::default())
            .map_err(ApiError::internal)?;
        if let Some(object) = defaults.as_object_mut() {
            object.extend(settings);
        }
        root.insert("settings".into(), defaults);
    }
    Ok(Value::Object(root))
}

pub async fn create(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    let created = match create_body(&body) {
        Ok(request) => {
            let bytes = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
            api::create(State(state.app.clone()), bytes).await
        }
        Err(error) => Err(error),
    };
    match created {
        Ok((_, Json(source))) => redirect(&format!("/sources/{}?added=1", enc(&source.key))),
        Err(error) => {
            let form = SourceForm::read(&body);
            let status = error.code.status();
            let html = page(
                "Add a source",
                Some(&session),
                Nav::Sources,
                &source_form(&session, &form, Some(&error)),
            );
            (status, Html(html)).into_response()
        }
    }
}

/// A progress bar of one stage.
fn bar(stage: &str, label: &str, value: i64, max: i64) -> String {
    format!(
        r#"<div class="stage"><label for="bar-{stage}">{label}</label><progress id="bar-{stage}" data-stage="{stage}" value="{value}" max="{max}">{value} of {max}</progress><span class="count" data-count="{stage}">{value} of {max}</span></div>"#,
        max = max.max(1),
    )
}

fn run_panel(run: Option<&SyncRunView>) -> String {
    let Some(run) = run else {
        return r#"<section id="run" aria-live="polite"><h2>Current run</h2><p class="empty" data-field="label">No run yet: start one with “Sync now”.</p></section>"#.to_owned();
    };
    let counts = &run.counts;
    // While fetching, the pages seen so far bound the fetched bar; afterwards the changed pages.
    let fetching = SyncStatus::UNFINISHED.contains(&run.status);
    let total = counts.changed;
    let fetched_max = if fetching {
        counts.seen.max(counts.changed)
    } else {
        counts.changed
    };
    format!(
        r#"<section id="run" aria-live="polite" data-finished="{finished}">
<h2>Current run</h2>
<p><span class="muted">{mode} sync</span> <strong class="state state-{state}" data-field="label">{label}</strong> <span class="muted">fetch <span data-field="status">{status}</span>; run <code>{run_id}</code></span></p>
<div class="bars">{fetched}{converted}{embedded}{indexed}{failed}</div>
<dl class="figures">
<div><dt>Pages seen</dt><dd data-field="seen">{seen}</dd></div>
<div><dt>Deleted</dt><dd data-field="deleted">{deleted}</dd></div>
<div><dt>Confluence requests</dt><dd data-field="requests">{requests}</dd></div>
<div><dt>Waited on rate limits</dt><dd data-field="waited">{waited:.1} s</dd></div>
</dl>
<p class="error" data-field="error"{error_hidden}>{error}</p>
</section>"#,
        finished = run.pipeline.is_finished(),
        mode = run.mode,
        state = esc(&state_name(run)),
        label = esc(&run.pipeline_label),
        status = run.status,
        run_id = run.run_id,
        fetched = bar("fetched", "Fetched", counts.changed, fetched_max),
        converted = bar("converted", "Converted", counts.converted, total),
        embedded = bar("embedded", "Embedded", counts.embedded, total),
        indexed = bar("indexed", "Indexed", counts.indexed, total),
        failed = bar("failed", "Failed", counts.failed, total + counts.failed),
        seen = counts.seen,
        deleted = counts.deleted,
        requests = run.confluence_requests,
        waited = run.rate_limit_wait_ms as f64 / 1000.0,
        error_hidden = if run.last_error.is_some() {
            ""
        } else {
            " hidden"
        },
        error = esc(run.last_error.as_deref().unwrap_or("")),
    )
}

/// What the page's script swaps in while it follows a run: the source's counts, the run's panel,
/// the recent runs and their errors (so that nothing keeps the state the page was loaded with).
fn live_html(source: &SourceView, current: Option<&SyncRunView>, runs: &[SyncRunView]) -> String {
    let mut rows = String::new();
    for run in runs {
        let duration = run
            .finished_at
            .map(|finished| html::span((finished - run.started_at).num_seconds()))
            .unwrap_or_else(|| "–".to_owned());
        rows.push_str(&format!(
            r#"<tr><td>{started}</td><td>{mode}</td><td>{label}</td><td>{status}</td><td>{changed}</td><td>{indexed}</td><td>{failed}</td><td>{requests}</td><td>{waited:.1} s</td><td>{duration}</td></tr>"#,
            started = html::time(run.started_at),
            mode = run.mode,
            label = esc(&run.pipeline_label),
            status = run.status,
            changed = run.counts.changed,
            indexed = run.counts.indexed,
            failed = run.counts.failed,
            requests = run.confluence_requests,
            waited = run.rate_limit_wait_ms as f64 / 1000.0,
        ));
    }
    let table = if runs.is_empty() {
        r#"<p class="empty">No runs yet.</p>"#.to_owned()
    } else {
        format!(
            r#"<div class="scroll"><table><thead><tr><th scope="col">Started</th><th scope="col">Mode</th><th scope="col">State</th><th scope="col">Fetch</th><th scope="col">Changed</th><th scope="col">Indexed</th><th scope="col">Failed</th><th scope="col">Requests</th><th scope="col">Rate-limit waits</th><th scope="col">Fetch time</th></tr></thead><tbody>{rows}</tbody></table></div>"#
        )
    };
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            run.last_error
                .as_ref()
                .map(|error| format!("<li>{}: {}</li>", html::time(run.started_at), esc(error)))
        })
        .collect();
    let errors = if errors.is_empty() {
        r#"<p class="empty">No run reported an error.</p>"#.to_owned()
    } else {
        format!("<ul>{}</ul>", errors.join(""))
    };
    format!(
        r#"<p class="site">{site} · {auth} · {pages} pages, {chunks} chunks · {next} · {behind}</p>
{panel}
<section><h2>Recent runs</h2>{table}</section>
<section><h2>Errors</h2>{errors} <p><a href="/dead-letters">Dead letters</a> hold the events a stage gave up on.</p></section>"#,
        site = esc(&source.site_url),
        auth = if source.auth_kind == "cloud" {
            "Cloud"
        } else {
            "Data Center"
        },
        pages = source.pages,
        chunks = source.chunks,
        next = next_run(source),
        behind = esc(&behind(source)),
        panel = run_panel(current),
    )
}

pub async fn detail(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, UiError> {
    let fail = |e| UiError::new(e, &session);
    let source = api::view(&state.app, &key).await.map_err(fail)?;
    let runs = api::recent_runs(&state.app, source.id, &source.key, 10)
        .await
        .map_err(fail)?;
    // A run just requested may not be projected yet: the status route asks the stream too.
    let current = match query
        .as_deref()
        .and_then(|q| form_value(q.as_bytes(), "run"))
    {
        Some(run) => api::status(
            State(state.app.clone()),
            Path(source.key.clone()),
            RawQuery(Some(format!("run={}", enc(&run)))),
        )
        .await
        .ok()
        .map(|json| json.0),
        None => None,
    };
    let current = current.as_ref().or(runs.first());
    let notice = match query.as_deref() {
        Some(q) if form_value(q.as_bytes(), "added").is_some() => {
            r#"<p class="notice" role="status">Source added: its credentials were checked against Confluence. Start its first sync below.</p>"#
        }
        Some(q) if form_value(q.as_bytes(), "run").is_some() => {
            r#"<p class="notice" role="status">Sync requested.</p>"#
        }
        _ => "",
    };
    let progress_url = match current {
        Some(run) => format!("/sources/{}/progress?run={}", enc(&source.key), run.run_id),
        None => format!("/sources/{}/progress", enc(&source.key)),
    };
    let webhook_path = format!("/webhooks/confluence/{}", enc(&source.key));
    let webhook_url = match state.app.webhook_base_url() {
        Some(base) => format!("{}{webhook_path}", base.trim_end_matches('/')),
        None => format!("https://<your webhook ingress>{webhook_path}"),
    };
    let body = format!(
        r#"{notice}<div class="title-row"><h1>{key} <span class="muted">space {space}</span></h1><div class="actions">{buttons}</div></div>
<div id="live" data-progress-url="{progress_url}">{live}</div>
<section><h2>Webhook</h2><p>Point Confluence's webhooks (page created, updated, restored, moved, trashed, removed) at</p><p><code class="copy">{webhook_url}</code></p></section>"#,
        key = esc(&source.key),
        space = esc(&source.space_key),
        buttons = sync_buttons(&session, &source.key),
        progress_url = esc(&progress_url),
        live = live_html(&source, current, &runs),
        webhook_url = esc(&webhook_url),
    );
    Ok(Html(page(&source.key, Some(&session), Nav::Sources, &body)))
}

/// The run as JSON for the page's script: `{"finished": bool, "html": ...}`, the html being the
/// run's panel (empty before the first run) with the recent runs.
pub async fn progress(
    State(state): State<UiState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let run = query
        .as_deref()
        .and_then(|q| form_value(q.as_bytes(), "run"))
        .map(|run| format!("run={}", enc(&run)));
    let current =
        match api::status(State(state.app.clone()), Path(key.clone()), RawQuery(run)).await {
            Ok(Json(run)) => Some(run),
            Err(error) if error.code == crate::error::ErrorCode::SyncRunNotFound => None,
            Err(error) => return error.into_response(),
        };
    let source = match api::view(&state.app, &key).await {
        Ok(source) => source,
        Err(error) => return error.into_response(),
    };
    match api::recent_runs(&state.app, source.id, &source.key, 10).await {
        Ok(runs) => Json(json!({
            "finished": current.as_ref().is_some_and(|run| run.pipeline.is_finished()),
            "html": live_html(&source, current.as_ref(), &runs),
        }))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

pub async fn sync(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, UiError> {
    let mode = match form_value(&body, "mode").as_deref() {
        Some("full") => SyncMode::Full,
        _ => SyncMode::Incremental,
    };
    let (_, Json(accepted)) = api::sync(
        State(state.app.clone()),
        Path(key),
        RawQuery(Some(format!("mode={mode}"))),
    )
    .await
    .map_err(|e| UiError::new(e, &session))?;
    Ok(redirect(&format!(
        "/sources/{}?run={}",
        enc(&accepted.source),
        accepted.run_id
    )))
}

pub async fn confirm_remove(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(key): Path<String>,
) -> Result<Html<String>, UiError> {
    let source = api::view(&state.app, &key)
        .await
        .map_err(|e| UiError::new(e, &session))?;
    let body = format!(
        r#"<h1>Remove {key}?</h1>
<div class="card narrow"><p>This removes the source <strong>{key}</strong> (space {space} on {site}), its {pages} pages and {chunks} chunks from the knowledge base, and its events from the streams. Confluence is not touched.</p>
<form method="post" action="/sources/{key_path}/remove">{csrf}<button type="submit" class="danger">Remove {key}</button> <a href="/sources/{key_path}">Keep it</a></form></div>"#,
        key = esc(&source.key),
        key_path = enc(&source.key),
        space = esc(&source.space_key),
        site = esc(&source.site_url),
        pages = source.pages,
        chunks = source.chunks,
        csrf = html::csrf_field(&session),
    );
    Ok(Html(page(
        "Remove a source",
        Some(&session),
        Nav::Sources,
        &body,
    )))
}

pub async fn remove(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(key): Path<String>,
) -> Result<Response, UiError> {
    let _removed = api::remove(State(state.app.clone()), Path(key))
        .await
        .map_err(|e| UiError::new(e, &session))?;
    Ok(redirect("/sources"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_api_body_with_one_token() {
        let body = create_body(
            b"csrf=x&auth.kind=data_center&site_url=https%3A%2F%2Fwiki.example&spaces=ENG%2C+ops%2C\
              &auth.email=me%40example.com&auth.api_token=cloud-token\
              &auth.personal_access_token=dc-token&settings.incremental_interval_secs=600",
        )
        .expect("body");
        assert_eq!(
            body["auth"],
            json!({"kind": "data_center", "personal_access_token": "dc-token"})
        );
        assert_eq!(body["site_url"], "https://wiki.example");
        assert_eq!(body["spaces"], json!(["ENG", "ops"]));
        let all = create_body(b"all_spaces=1&key=site").expect("all spaces");
        assert_eq!(all["spaces"], "all");
        let both = create_body(b"spaces=ENG&all_spaces=1").expect_err("keys and all");
        assert_eq!(both.field.as_deref(), Some("spaces"));
        assert_eq!(body["settings"]["incremental_interval_secs"], 600);
        assert!(body.get("csrf").is_none());
        let error = create_body(b"settings.incremental_interval_secs=soon").expect_err("interval");
        assert_eq!(
            error.field.as_deref(),
            Some("settings.incremental_interval_secs")
        );
    }
}
