//! Dead letters: the events a stage gave up on, with the stage and the reason; retry one or all.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{Html, Response};
use pagestream_bus::dead_letter::{self, RetryOutcome};

use super::html::{self, Nav, esc, page};
use super::{Session, UiError, UiState, form_value, redirect};
use crate::error::ApiError;

/// The most letters one page lists.
const LIST_LIMIT: usize = 200;

pub async fn list(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, UiError> {
    let letters = dead_letter::list(&state.app.inner.bus, LIST_LIMIT)
        .await
        .map_err(|e| UiError::new(ApiError::dependency("nats", e), &session))?;
    let retried = query
        .as_deref()
        .and_then(|q| form_value(q.as_bytes(), "retried"))
        .and_then(|n| n.parse::<usize>().ok());
    let superseded = query
        .as_deref()
        .and_then(|q| form_value(q.as_bytes(), "superseded"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = String::new();
    if superseded > 0 {
        body.push_str(&format!(
            r#"<p class="notice" role="status">Dropped {superseded} {}: the page has a newer fact, or was purged, so publishing again would take it back.</p>"#,
            if superseded == 1 { "dead letter" } else { "dead letters" },
        ));
    }
    if let Some(retried) = retried.filter(|n| *n > 0 || superseded == 0) {
        body.push_str(&format!(
            r#"<p class="notice" role="status">Retried {retried} {}: published again on {}.</p>"#,
            if retried == 1 { "event" } else { "events" },
            if retried == 1 {
                "its subject"
            } else {
                "their subjects"
            },
        ));
    }
    let csrf = html::csrf_field(&session);
    body.push_str(r#"<div class="title-row"><h1>Dead letters</h1>"#);
    if !letters.is_empty() {
        body.push_str(&format!(
            r#"<form method="post" action="/dead-letters/retry">{csrf}<input type="hidden" name="all" value="1"><button type="submit">Retry all</button></form>"#
        ));
    }
    body.push_str("</div>");
    if letters.is_empty() {
        body.push_str(r#"<p class="empty">No dead letters: every stage handled every event.</p>"#);
        return Ok(Html(page(
            "Dead letters",
            Some(&session),
            Nav::DeadLetters,
            &body,
        )));
    }
    body.push_str(r#"<p class="muted">Retrying publishes the event again on its subject (every stage of that subject sees it again) and removes the letter. Fix the cause first.</p><ul class="cards">"#);
    for (sequence, letter) in &letters {
        body.push_str(&format!(
            r#"<li class="card letter" data-sequence="{sequence}">
<h2>{stage} <span class="muted">#{sequence}</span></h2>
<p class="reason">{reason}</p>
<p class="meta"><code>{subject}</code> · {deliveries} deliveries · failed {failed}</p>
<form method="post" action="/dead-letters/retry">{csrf}<input type="hidden" name="sequence" value="{sequence}"><button type="submit" aria-label="Retry dead letter {sequence}">Retry</button></form>
</li>"#,
            stage = esc(&letter.stage),
            reason = esc(&letter.reason),
            subject = esc(&letter.subject),
            deliveries = letter.deliveries,
            failed = html::time(letter.failed_at),
        ));
    }
    body.push_str("</ul>");
    Ok(Html(page(
        "Dead letters",
        Some(&session),
        Nav::DeadLetters,
        &body,
    )))
}

pub async fn retry(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Result<Response, UiError> {
    let bus = &state.app.inner.bus;
    let fail = |e| UiError::new(ApiError::dependency("nats", e), &session);
    let sequences: Vec<u64> = if form_value(&body, "all").is_some() {
        dead_letter::list(bus, usize::MAX)
            .await
            .map_err(fail)?
            .into_iter()
            .map(|(sequence, _)| sequence)
            .collect()
    } else {
        let sequence = form_value(&body, "sequence")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                UiError::new(ApiError::invalid("sequence", "not a dead letter"), &session)
            })?;
        vec![sequence]
    };
    let (mut published, mut superseded) = (0, 0);
    for sequence in &sequences {
        let retried = dead_letter::retry(bus, *sequence).await.map_err(fail)?;
        let letter = &retried.letter;
        match retried.outcome {
            RetryOutcome::Published => published += 1,
            RetryOutcome::Superseded { reason } => {
                superseded += 1;
                tracing::info!(sequence, subject = %letter.subject, reason, "dead letter dropped: superseded");
            }
        }
        tracing::info!(sequence, stage = %letter.stage, subject = %letter.subject, "dead letter retried from the ui");
    }
    Ok(redirect(&format!(
        "/dead-letters?retried={published}&superseded={superseded}"
    )))
}
