//! `pagestream sources webhooks <source> list|check|register|remove`: the source's webhooks on its
//! Confluence site, through the api (which holds the credentials).

use std::io::Write;

use pagestream_views::{RegisteredStatus, WebhookEventStatus, WebhookReport};
use reqwest::Method;
use serde_json::json;

use crate::WebhooksAction;
use crate::api::{ApiClient, encode};
use crate::commands::print_json;
use crate::error::CliError;

pub async fn run(
    api: &ApiClient,
    source: &str,
    action: WebhooksAction,
    public_url: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let path = format!("/api/confluence/{}/webhooks", encode(source));
    let query: Vec<(&str, String)> = public_url
        .map(|url| ("public_url", url.to_owned()))
        .into_iter()
        .collect();
    let report: WebhookReport = match action {
        WebhooksAction::List | WebhooksAction::Check => {
            api.get(&path, &query, "check webhooks").await?
        }
        WebhooksAction::Register => register(api, source, public_url).await?,
        WebhooksAction::Remove => {
            api.call(Method::DELETE, &path, &query, None, "remove webhooks")
                .await?
        }
    };
    if json {
        print_json(out, &report)?;
    } else {
        match action {
            WebhooksAction::List => list(&report, out)?,
            WebhooksAction::Check => check(&report, out)?,
            WebhooksAction::Register => writeln!(
                out,
                "webhooks of {} registered at {}: {} created, {} removed; {} of {} events delivered",
                report.key,
                report.public_url,
                report.created,
                report.removed,
                delivered(&report),
                report.events.len()
            )?,
            WebhooksAction::Remove => writeln!(
                out,
                "removed {} webhook(s) of {} (no other webhook of the site was touched)",
                report.removed, report.key
            )?,
        }
    }
    if matches!(action, WebhooksAction::Check | WebhooksAction::Register) && !report.healthy {
        return Err(CliError::WebhooksUnhealthy {
            source_key: report.key,
        });
    }
    Ok(())
}

/// `PUT /api/confluence/{id}/webhooks`: also what `sources add --register-webhooks` does.
pub async fn register(
    api: &ApiClient,
    source: &str,
    public_url: Option<&str>,
) -> Result<WebhookReport, CliError> {
    let body = match public_url {
        Some(url) => json!({"public_url": url}),
        None => json!({}),
    };
    api.call(
        Method::PUT,
        &format!("/api/confluence/{}/webhooks", encode(source)),
        &[],
        Some(body),
        "register webhooks",
    )
    .await
}

pub fn delivered(report: &WebhookReport) -> usize {
    report
        .events
        .iter()
        .filter(|event| event.status == WebhookEventStatus::Ok)
        .count()
}

fn registered_status(status: RegisteredStatus) -> &'static str {
    match status {
        RegisteredStatus::Ok => "ok",
        RegisteredStatus::Stale => "stale",
        RegisteredStatus::Extra => "extra",
    }
}

fn list(report: &WebhookReport, out: &mut dyn Write) -> Result<(), CliError> {
    if report.webhooks.is_empty() {
        writeln!(
            out,
            "no webhooks point at {} under {}\n  register them with `pagestream sources webhooks {} register`",
            report.key, report.public_url, report.key
        )?;
        return Ok(());
    }
    for hook in &report.webhooks {
        writeln!(
            out,
            "{}  {}{}  {}\n    {}",
            hook.id,
            registered_status(hook.status),
            if hook.active { "" } else { " (disabled)" },
            hook.events.join(","),
            hook.url
        )?;
    }
    Ok(())
}

fn check(report: &WebhookReport, out: &mut dyn Write) -> Result<(), CliError> {
    for event in &report.events {
        let status = match event.status {
            WebhookEventStatus::Ok => "ok",
            WebhookEventStatus::Missing => "missing",
            WebhookEventStatus::Inactive => "disabled",
            WebhookEventStatus::WrongUrl => "wrong url (the ingester refuses its deliveries)",
        };
        match &event.webhook_id {
            Some(id) => writeln!(out, "{:<20}  {status} (webhook {id})", event.event)?,
            None => writeln!(out, "{:<20}  {status}", event.event)?,
        }
    }
    for hook in &report.webhooks {
        if hook.status != RegisteredStatus::Ok {
            writeln!(
                out,
                "{} webhook {} ({}): {}",
                registered_status(hook.status),
                hook.id,
                hook.events.join(","),
                hook.url
            )?;
        }
    }
    if report.healthy {
        writeln!(
            out,
            "all {} events of {} are delivered to {}",
            report.events.len(),
            report.key,
            report.public_url
        )?;
    }
    Ok(())
}
