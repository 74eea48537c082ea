//! Search and reading: the search form with every filter (the URL holds the query, so a search
//! can be shared), results, and a page's Markdown rendered through a sanitiser.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::html::{self, Field, Nav, enc, esc, page};
use super::{Session, UiError, UiState};
use crate::error::ApiError;
use crate::search::SearchResponse;

/// The search form's fields: the api's own parameter names, so the page's URL is the api query.
const FILTERS: [(&str, &str, &str, &str); 6] = [
    ("space", "Space key", "text", ""),
    ("label", "Label", "text", ""),
    (
        "path",
        "Subtree",
        "text",
        "A page path such as /65601/65602",
    ),
    ("jira", "Jira issue", "text", "PROJ-123"),
    ("mention", "Mentioned user", "text", "Account id"),
    ("updated_after", "Updated after", "date", ""),
];

fn search_form(
    query: &str,
    sources: &[String],
    chosen_source: &str,
    values: &dyn Fn(&str) -> String,
    error: Option<&ApiError>,
) -> String {
    let error_of = |name: &str| {
        error
            .filter(|error| error.field.as_deref() == Some(name))
            .map(|error| error.message.as_str())
    };
    let mut options = String::from(r#"<option value="">All sources</option>"#);
    for source in sources {
        options.push_str(&format!(
            r#"<option value="{value}"{selected}>{value}</option>"#,
            value = esc(source),
            selected = if source == chosen_source {
                " selected"
            } else {
                ""
            }
        ));
    }
    let source_error = error_of("source")
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let q_error = error_of("q")
        .map(|e| {
            format!(
                r#"<p class="error" id="f-q-error" role="alert">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let filters: String = FILTERS
        .iter()
        .map(|&(name, label, kind, hint)| {
            let value = values(name);
            Field {
                name,
                label,
                kind,
                value: &value,
                hint,
                error: error_of(name),
                required: false,
            }
            .render()
        })
        .collect();
    let open =
        FILTERS.iter().any(|(name, ..)| !values(name).is_empty()) || !chosen_source.is_empty();
    format!(
        r#"<form method="get" action="/search" class="search" role="search">
<div class="query"><label for="f-q" class="visually-hidden">Search</label><input id="f-q" name="q" type="search" value="{query}" placeholder="Ask or search the knowledge base" autofocus>{q_error}<button type="submit">Search</button></div>
<details{open}><summary>Filters</summary><div class="filters">
<div class="field"><label for="f-source">Source</label><select id="f-source" name="source">{options}</select>{source_error}</div>
{filters}</div></details>
</form>"#,
        query = esc(query),
        open = if open { " open" } else { "" },
    )
}

pub async fn search(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, UiError> {
    let raw = raw.unwrap_or_default();
    // Empty fields of the form are left out, so the api sees only what was filled in.
    let filled: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let value = |name: &str| {
        filled
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let sources: Vec<String> = crate::sources::list(State(state.app.clone()))
        .await
        .map_err(|e| UiError::new(e, &session))?
        .0
        .sources
        .into_iter()
        .map(|source| source.key)
        .collect();
    let query = value("q");
    let (results, error) = if query.is_empty() {
        (String::new(), None)
    } else {
        let api_query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(filled.iter())
            .finish();
        match crate::search::handler(State(state.app.clone()), RawQuery(Some(api_query))).await {
            Ok(Json(response)) => (results(&response), None),
            Err(error) => (String::new(), Some(error)),
        }
    };
    let summary = match &error {
        Some(error)
            if error.field.as_deref().is_none_or(|field| {
                !["q", "source"].contains(&field)
                    && !FILTERS.iter().any(|(name, ..)| *name == field)
            }) =>
        {
            format!(
                r#"<p class="error" role="alert">{}</p>"#,
                esc(&error.message)
            )
        }
        _ => String::new(),
    };
    let body = format!(
        "<h1>Search</h1>{}{summary}{results}",
        search_form(&query, &sources, &value("source"), &value, error.as_ref())
    );
    let title = if query.is_empty() {
        "Search".to_owned()
    } else {
        format!("{query} – Search")
    };
    Ok(Html(page(&title, Some(&session), Nav::Search, &body)))
}

fn results(response: &SearchResponse) -> String {
    let mut html = String::new();
    for warning in &response.warnings {
        html.push_str(&format!(r#"<p class="notice">{}</p>"#, esc(warning)));
    }
    if response.hits.is_empty() {
        html.push_str(r#"<p class="empty" role="status">Nothing matched. Try other words or fewer filters.</p>"#);
        return html;
    }
    html.push_str(&format!(
        r#"<p class="muted" role="status">{} results in {:.0} ms</p><ol class="results">"#,
        response.hits.len(),
        response.took_ms
    ));
    for hit in &response.hits {
        let crumbs: Vec<String> = hit.heading_path.iter().map(|part| esc(part)).collect();
        html.push_str(&format!(
            r#"<li class="result"><h2><a href="/pages/{source_path}/{page_path}">{title}</a></h2>
<p class="crumbs">{crumbs}</p>
<p class="snippet">{snippet}</p>
<p class="meta">{source} · {modified} · {confluence}</p></li>"#,
            source_path = enc(&hit.source),
            page_path = enc(&hit.page_id),
            title = esc(&hit.title),
            crumbs = crumbs.join(" › "),
            // The api escapes the snippet and adds only <mark> elements.
            snippet = hit.snippet,
            source = esc(&hit.source),
            modified = hit.last_modified.map_or_else(
                || "modified at an unknown time".to_owned(),
                |at| format!("modified {}", html::time(at))
            ),
            confluence = html::external_link(&hit.url, "Open in Confluence"),
        ));
    }
    html.push_str("</ol>");
    html
}

/// Markdown to HTML, then through ammonia: no script, no event handler, no `javascript:` link
/// and no image survives, whatever the page held.
pub fn render_markdown(markdown: &str) -> String {
    let mut options = pulldown_cmark::Options::empty();
    options.insert(pulldown_cmark::Options::ENABLE_TABLES);
    options.insert(pulldown_cmark::Options::ENABLE_STRIKETHROUGH);
    options.insert(pulldown_cmark::Options::ENABLE_TASKLISTS);
    let parser = pulldown_cmark::Parser::new_ext(markdown, options);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut unsafe_html, parser);
    // Images are dropped: a page's images are Confluence attachments this site cannot serve.
    ammonia::Builder::default()
        .rm_tags(["img"])
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_schemes(["http", "https", "mailto"].into())
        .clean(&unsafe_html)
        .to_string()
}

fn strings(metadata: &Value, name: &str) -> Vec<String> {
    metadata[name]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn list_or_none(items: &[String], render: impl Fn(&str) -> String) -> String {
    if items.is_empty() {
        r#"<span class="muted">none</span>"#.to_owned()
    } else {
        items
            .iter()
            .map(|item| render(item))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub async fn show(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path((source, page_id)): Path<(String, String)>,
) -> Result<Response, UiError> {
    let Json(detail) = crate::pages::detail(State(state.app.clone()), Path((source, page_id)))
        .await
        .map_err(|e| UiError::new(e, &session))?;
    let markdown = detail.markdown.clone().unwrap_or_default();
    let rendered = tokio::task::spawn_blocking(move || render_markdown(&markdown))
        .await
        .map_err(|e| UiError::new(ApiError::internal(e), &session))?;
    let metadata = &detail.metadata;
    let summary = &detail.page;
    let source_path = enc(&summary.source);
    let ancestors: Vec<String> = metadata["ancestors"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|ancestor| {
                    let id = ancestor["id"].as_str()?;
                    let title = ancestor["title"].as_str().unwrap_or(id);
                    Some(format!(
                        r#"<li><a href="/pages/{source_path}/{}">{}</a></li>"#,
                        enc(id),
                        esc(title)
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let labels = list_or_none(&summary.labels, |label| {
        format!(r#"<span class="tag">{}</span>"#, esc(label))
    });
    let jira = list_or_none(&strings(metadata, "jira_issue_links"), |key| {
        format!(r#"<span class="tag">{}</span>"#, esc(key))
    });
    let mentions = list_or_none(&strings(metadata, "user_mentions"), |user| {
        format!(r#"<span class="tag">{}</span>"#, esc(user))
    });
    let attachments = list_or_none(&strings(metadata, "attachments"), |name| {
        format!(r#"<span class="tag">{}</span>"#, esc(name))
    });
    let external = list_or_none(&strings(metadata, "external_links"), |url| {
        html::external_link(url, url)
    });
    let internal: Vec<String> = metadata["internal_links"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|link| link["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let internal = list_or_none(&internal, |title| {
        format!(r#"<span class="tag">{}</span>"#, esc(title))
    });
    let author = metadata["author"]["display_name"].as_str().unwrap_or("");
    let body = format!(
        r#"<nav aria-label="Breadcrumb" class="breadcrumb"><ol><li><a href="/sources/{source_path}">{source}</a></li>{ancestors}<li aria-current="page">{title}</li></ol></nav>
<article class="page">
<h1>{title}</h1>
<p class="meta">Space {space} · version {version} · {modified}{author} · {confluence}</p>
<div class="markdown">{rendered}</div>
</article>
<aside class="card metadata" aria-label="Page metadata"><dl>
<div><dt>Labels</dt><dd>{labels}</dd></div>
<div><dt>Jira issues</dt><dd>{jira}</dd></div>
<div><dt>Mentions</dt><dd>{mentions}</dd></div>
<div><dt>Attachments</dt><dd>{attachments}</dd></div>
<div><dt>Links to pages</dt><dd>{internal}</dd></div>
<div><dt>Links out</dt><dd>{external}</dd></div>
</dl></aside>"#,
        source = esc(&summary.source),
        ancestors = ancestors.join(""),
        title = esc(&summary.title),
        space = esc(&summary.space_key),
        version = summary.version,
        modified = summary
            .last_modified
            .map_or_else(String::new, |at| format!("modified {}", html::time(at))),
        author = if author.is_empty() {
            String::new()
        } else {
            format!(" by {}", esc(author))
        },
        confluence = html::external_link(&summary.url, "Open in Confluence"),
    );
    Ok(Html(page(&summary.title, Some(&session), Nav::Search, &body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_sanitised() {
        let html = render_markdown(
            "# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n\
             [click](javascript:alert(3)) and [docs](https://docs.example/)\n\n\
             | a | b |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains(r#"href="https://docs.example/""#), "{html}");
    }
}
