//! The commands that talk to the api: sources, status, search, pages.

use std::io::Write;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use pagestream_views::{
    PageDetail, PageList, SearchResponse, SourceList, SourceView, SyncRunView, WebhookPath,
};

use crate::api::{ApiClient, encode};
use crate::error::CliError;
use crate::table::{Table, plain_snippet};
use crate::{AddSourceArgs, PagesArgs, SearchArgs, SpacesArgs};

/// Pretty JSON for `--json`.
pub(crate) fn print_json(
    out: &mut dyn Write,
    value: &impl serde::Serialize,
) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|error| CliError::Protocol {
        context: "json output",
        reason: error.to_string(),
    })?;
    writeln!(out)?;
    Ok(())
}

/// Optional filters as query parameters, the empty ones left out.
fn query_of(pairs: &[(&'static str, Option<&String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(name, value)| value.map(|value| (*name, value.clone())))
        .collect()
}

pub async fn add_source(
    api: &ApiClient,
    args: &AddSourceArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let auth = match (&args.email, &args.api_token, &args.personal_token) {
        (Some(email), Some(token), None) => {
            json!({"kind": "cloud", "email": email, "api_token": token.expose_secret()})
        }
        (None, None, Some(token)) => {
            json!({"kind": "data_center", "personal_access_token": token.expose_secret()})
        }
        _ => {
            return Err(CliError::Usage(
                "give either --email with --api-token (Confluence Cloud) or --personal-token (Data Center)\n  tokens can come from CONFLUENCE_API_TOKEN / CONFLUENCE_PERSONAL_TOKEN instead of the command line".into(),
            ));
        }
    };
    let mut body =
        json!({"site_url": args.site_url, "spaces": args.spaces.to_json(), "auth": auth});
    if let Some(key) = &args.key {
        body["key"] = json!(key);
    }
    if let Some(secret) = &args.webhook_secret {
        body["webhook_secret"] = json!(secret.expose_secret());
    }
    if let Some(client_key) = &args.connect_client_key {
        body["connect_client_key"] = json!(client_key);
    }
    if let Some(interval) = args.incremental_interval_secs {
        body["settings"] = json!({"incremental_interval_secs": interval});
    }
    let source: SourceView = api
        .call(
            Method::POST,
            "/api/confluence/sources",
            &[],
            Some(body),
            "add source",
        )
        .await?;
    writeln!(
        out,
        "added source {} (space {} at {}, id {})",
        source.key, source.space_key, source.site_url, source.id
    )?;
    if args.register_webhooks {
        let report = crate::webhooks::register(api, &source.key, args.public_url.as_deref())
            .await
            .map_err(|error| CliError::WebhooksNotRegistered {
                source_key: source.key.clone(),
                reason: error.to_string(),
            })?;
        writeln!(
            out,
            "registered {} webhook(s) at {}: {} of {} events delivered",
            report.created,
            report.public_url,
            crate::webhooks::delivered(&report),
            report.events.len()
        )?;
    }
    writeln!(out, "  next: pagestream sync {} --full --wait", source.key)?;
    Ok(())
}

pub async fn update_source(
    api: &ApiClient,
    source: &str,
    spaces: &SpacesArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let source: SourceView = api
        .call(
            Method::PATCH,
            &format!("/api/confluence/{}", encode(source)),
            &[],
            Some(json!({"spaces": spaces.to_json()})),
            "update source",
        )
        .await?;
    writeln!(
        out,
        "source {} now covers {}: the next sync adds new spaces and removes the pages of spaces taken off",
        source.key, source.space_key
    )?;
    Ok(())
}

pub async fn rotate_webhook_url(
    api: &ApiClient,
    source: &str,
    public_url: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let path: WebhookPath = api
        .call(
            Method::POST,
            &format!("/api/confluence/{}/webhook-path", encode(source)),
            &[],
            None,
            "set webhook path",
        )
        .await?;
    writeln!(
        out,
        "webhooks of {} now deliver to {}{}/<event> (the previous URL no longer works; this one is shown only now)",
        path.key,
        public_url.trim_end_matches('/'),
        path.path
    )?;
    Ok(())
}

pub async fn list_sources(
    api: &ApiClient,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let list: SourceList = api
        .get("/api/confluence/sources", &[], "list sources")
        .await?;
    if json {
        return print_json(out, &list.sources);
    }
    if list.sources.is_empty() {
        writeln!(
            out,
            "no sources yet\n  add one with `pagestream sources add --site-url <url> --space <KEY> --email <e-mail>` (token in CONFLUENCE_API_TOKEN)"
        )?;
        return Ok(());
    }
    let mut table = Table::new(vec![
        "key",
        "space",
        "site",
        "auth",
        "pages",
        "chunks",
        "last sync",
    ]);
    for source in &list.sources {
        table.row(vec![
            source.key.clone(),
            source.space_key.clone(),
            source.site_url.clone(),
            source.auth_kind.clone(),
            source.pages.to_string(),
            source.chunks.to_string(),
            source
                .last_sync
                .as_ref()
                .map_or_else(|| "never".to_owned(), run_summary),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn run_summary(run: &SyncRunView) -> String {
    format!(
        "{} {} {}",
        run.mode,
        run.pipeline,
        run.finished_at
            .unwrap_or(run.started_at)
            .format("%Y-%m-%d %H:%M")
    )
}

pub async fn remove_source(
    api: &ApiClient,
    source: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let removed: Value = api
        .call(
            Method::DELETE,
            &format!("/api/confluence/{}", encode(source)),
            &[],
            None,
            "remove source",
        )
        .await?;
    writeln!(
        out,
        "removed source {} with its pages, chunks and stream data",
        removed["key"].as_str().unwrap_or(source)
    )?;
    Ok(())
}

pub async fn status(
    api: &ApiClient,
    source: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let list: SourceList = api
        .get("/api/confluence/sources", &[], "list sources")
        .await?;
    let next_syncs: std::collections::HashMap<String, Option<chrono::DateTime<chrono::Utc>>> = list
        .sources
        .iter()
        .map(|source| (source.key.clone(), source.next_sync_at))
        .collect();
    let keys = match source {
        Some(source) => vec![source.to_owned()],
        None => list.sources.into_iter().map(|source| source.key).collect(),
    };
    let mut runs = Vec::new();
    for key in &keys {
        match api.run_status(key, None).await {
            Ok(run) => runs.push((key.clone(), Some(run))),
            // A source that never synced has no run yet.
            Err(CliError::Api { code, .. }) if code == "sync_run_not_found" => {
                runs.push((key.clone(), None));
            }
            Err(error) => return Err(error),
        }
    }
    // A source named by its uuid: the run says its key.
    let next_sync_of = |key: &str, run: &Option<SyncRunView>| {
        next_syncs
            .get(key)
            .or_else(|| run.as_ref().and_then(|run| next_syncs.get(&run.source)))
            .copied()
            .flatten()
    };
    if json {
        let value: Vec<Value> = runs
            .iter()
            .map(|(key, run)| json!({"source": key, "run": run, "next_sync_at": next_sync_of(key, run)}))
            .collect();
        return print_json(out, &value);
    }
    if runs.is_empty() {
        writeln!(
            out,
            "no sources yet\n  add one with `pagestream sources add`"
        )?;
    }
    for (key, run) in &runs {
        match run {
            None => writeln!(
                out,
                "{key}: never synced\n  start with `pagestream sync {key} --full --wait`"
            )?,
            Some(run) => write_run(out, run)?,
        }
        match next_sync_of(key, run) {
            Some(at) => writeln!(
                out,
                "  next scheduled sync {} (in {} min)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                (at - chrono::Utc::now()).num_minutes().max(0)
            )?,
            None => writeln!(out, "  scheduled syncs off")?,
        }
    }
    Ok(())
}

/// A sync run in a few readable lines.
pub fn write_run(out: &mut dyn Write, run: &SyncRunView) -> Result<(), CliError> {
    let counts = &run.counts;
    let timing = match run.finished_at {
        Some(finished) => format!(
            "fetched in {:.1} s",
            finished
                .signed_duration_since(run.started_at)
                .num_milliseconds() as f64
                / 1000.0
        ),
        None => format!(
            "running for {} s",
            chrono::Utc::now()
                .signed_duration_since(run.started_at)
                .num_seconds()
        ),
    };
    writeln!(
        out,
        "{}: {} sync {} (fetch {}; run {}), started {}, {timing}",
        run.source,
        run.mode,
        run.pipeline,
        run.status,
        run.run_id,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
    )?;
    writeln!(
        out,
        "  seen {}  changed {}  deleted {}  converted {}  embedded {}  indexed {}  failed {}",
        counts.seen,
        counts.changed,
        counts.deleted,
        counts.converted,
        counts.embedded,
        counts.indexed,
        counts.failed
    )?;
    writeln!(
        out,
        "  Confluence requests {}  waited on rate limits {:.1} s",
        run.confluence_requests,
        run.rate_limit_wait_ms as f64 / 1000.0
    )?;
    if let Some(error) = &run.last_error {
        writeln!(out, "  last error: {error}")?;
    }
    if counts.failed > 0 {
        writeln!(
            out,
            "  {} pages failed: see `pagestream dlq list`",
            counts.failed
        )?;
    }
    Ok(())
}

pub async fn search(
    api: &ApiClient,
    args: &SearchArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut query = vec![("q", args.query.clone()), ("limit", args.limit.to_string())];
    query.extend(query_of(&[
        ("source", args.source.as_ref()),
        ("space", args.space.as_ref()),
        ("label", args.label.as_ref()),
        ("path", args.path.as_ref()),
        ("jira", args.jira.as_ref()),
        ("mention", args.mention.as_ref()),
        ("updated_after", args.updated_after.as_ref()),
        ("content_type", args.content_type.as_ref()),
    ]));
    if args.json {
        let body: Value = api.get("/api/search", &query, "search").await?;
        return print_json(out, &body);
    }
    let response: SearchResponse = api.get("/api/search", &query, "search").await?;
    for warning in &response.warnings {
        writeln!(out, "note: {warning}")?;
    }
    if response.hits.is_empty() {
        writeln!(
            out,
            "no results ({:.0} ms)\n  try other words, fewer filters, or check `pagestream status`",
            response.took_ms
        )?;
        return Ok(());
    }
    let rank = |rank: Option<i64>| rank.map_or_else(|| "-".to_owned(), |rank| rank.to_string());
    let mut table = Table::new(vec![
        "#",
        "score",
        "vec",
        "text",
        "page",
        "section",
        "source:id",
    ]);
    for (index, hit) in response.hits.iter().enumerate() {
        table.row(vec![
            (index + 1).to_string(),
            format!("{:.4}", hit.score),
            rank(hit.vector_rank),
            rank(hit.text_rank),
            match hit.content_type.as_str() {
                "blogpost" => format!("[blog] {}", hit.title),
                _ => hit.title.clone(),
            },
            hit.heading_path
                .iter()
                .skip(1)
                .cloned()
                .collect::<Vec<_>>()
                .join(" › "),
            format!("{}:{}", hit.source, hit.page_id),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    for (index, hit) in response.hits.iter().enumerate() {
        writeln!(out, "{:>2}. {}", index + 1, hit.url)?;
        let snippet = plain_snippet(&hit.snippet, ("«", "»"));
        if !snippet.trim().is_empty() {
            writeln!(out, "    {}", snippet.replace('\n', " "))?;
        }
    }
    writeln!(
        out,
        "({} results, {:.0} ms)",
        response.hits.len(),
        response.took_ms
    )?;
    Ok(())
}

pub async fn pages(api: &ApiClient, args: &PagesArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(page) = &args.page {
        let path = format!("/api/pages/{}/{}", encode(&args.source), encode(page));
        if args.json {
            let body: Value = api.get(&path, &[], "page").await?;
            return print_json(out, &body);
        }
        let detail: PageDetail = api.get(&path, &[], "page").await?;
        writeln!(
            out,
            "# {} (version {}, {})\n",
            detail.page.title, detail.page.version, detail.page.url
        )?;
        writeln!(out, "{}", detail.markdown.unwrap_or_default())?;
        return Ok(());
    }
    let path = format!("/api/confluence/{}/pages", encode(&args.source));
    let mut cursor = args.cursor.clone();
    let mut pages = Vec::new();
    let next = loop {
        let mut query = vec![("limit", args.limit.to_string())];
        query.extend(query_of(&[
            ("path", args.path.as_ref()),
            ("label", args.label.as_ref()),
            ("updated_after", args.updated_after.as_ref()),
            ("cursor", cursor.as_ref()),
        ]));
        let list: PageList = api.get(&path, &query, "list pages").await?;
        pages.extend(list.pages);
        match list.next_cursor {
            Some(next) if args.all => cursor = Some(next),
            next => break next,
        }
    };
    if args.json {
        return print_json(out, &json!({"pages": pages, "next_cursor": next}));
    }
    let mut table = Table::new(vec!["id", "title", "version", "modified", "labels", "path"]);
    for page in &pages {
        table.row(vec![
            page.page_id.clone(),
            page.title.clone(),
            page.version.to_string(),
            page.last_modified
                .map(|at| at.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            page.labels.join(","),
            page.path.clone(),
        ]);
    }
    table.write(out)?;
    match next {
        Some(next) => writeln!(
            out,
            "({} pages; more with --cursor {next}, or --all)",
            pages.len()
        )?,
        None => writeln!(out, "({} pages)", pages.len())?,
    }
    Ok(())
}
