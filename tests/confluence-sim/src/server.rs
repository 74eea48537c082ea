//! The HTTP surface: Confluence Cloud's v1 search and content, v2 pages, spaces and ancestors,
//! with Basic auth, cursors, `Link` headers and v1/v2 error bodies; plus the `/_sim` control plane.

// Handlers bail out early with a ready response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::content::{
    CommentLocation, ContentKind, PageStatus, SimAttachment, SimComment, SimPage, USERS,
};
use crate::cql::{self, SortOrder};
use crate::state::{
    BodyJob, CreatePage, EditPage, Faults, LabelPage, LinkStyle, MovePage, MutationError, SimState,
    SimStats,
};
use crate::webhook::{self, WebhookDelivery, WebhookEvent};

pub(crate) struct Shared {
    pub state: Mutex<SimState>,
    pub http: reqwest::Client,
    pub site: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half-written in a way that matters
        // to a test double; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) mod hooks;
mod spaces;

type Params = Query<Vec<(String, String)>>;
type App = State<Arc<Shared>>;

const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 250;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/wiki/rest/api/content/search", get(v1_search))
        .route("/wiki/rest/api/content", get(v1_content_by_title))
        .route("/wiki/rest/api/content/{id}", get(v1_content))
        .route("/wiki/rest/api/user/current", get(v1_current_user))
        .route(
            "/wiki/api/v2/pages",
            get(|app: App, headers: HeaderMap, params: Params| {
                v2_bulk(app, headers, params, ContentKind::Page)
            }),
        )
        .route(
            "/wiki/api/v2/blogposts",
            get(|app: App, headers: HeaderMap, params: Params| {
                v2_bulk(app, headers, params, ContentKind::Blogpost)
            }),
        )
        .route(
            "/wiki/api/v2/pages/{id}",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_single(app, headers, id, params, ContentKind::Page)
                },
            ),
        )
        .route(
            "/wiki/api/v2/blogposts/{id}",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_single(app, headers, id, params, ContentKind::Blogpost)
                },
            ),
        )
        .route("/wiki/api/v2/pages/{id}/ancestors", get(v2_ancestors))
        .route("/wiki/api/v2/folders/{id}", get(v2_folder))
        .route(
            "/wiki/api/v2/pages/{id}/footer-comments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comments(
                        app,
                        headers,
                        id,
                        params,
                        ContentKind::Page,
                        CommentLocation::Footer,
                    )
                },
            ),
        )
        .route(
            "/wiki/api/v2/pages/{id}/inline-comments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comments(
                        app,
                        headers,
                        id,
                        params,
                        ContentKind::Page,
                        CommentLocation::Inline,
                    )
                },
            ),
        )
        .route(
            "/wiki/api/v2/blogposts/{id}/footer-comments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comments(
                        app,
                        headers,
                        id,
                        params,
                        ContentKind::Blogpost,
                        CommentLocation::Footer,
                    )
                },
            ),
        )
        .route(
            "/wiki/api/v2/blogposts/{id}/inline-comments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comments(
                        app,
                        headers,
                        id,
                        params,
                        ContentKind::Blogpost,
                        CommentLocation::Inline,
                    )
                },
            ),
        )
        .route(
            "/wiki/api/v2/footer-comments/{id}/children",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comment_children(app, headers, id, params, CommentLocation::Footer)
                },
            ),
        )
        .route(
            "/wiki/api/v2/inline-comments/{id}/children",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_comment_children(app, headers, id, params, CommentLocation::Inline)
                },
            ),
        )
        .route(
            "/wiki/api/v2/pages/{id}/attachments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_attachments(app, headers, id, params, ContentKind::Page)
                },
            ),
        )
        .route(
            "/wiki/api/v2/blogposts/{id}/attachments",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_attachments(app, headers, id, params, ContentKind::Blogpost)
                },
            ),
        )
        .route("/wiki/api/v2/attachments/{id}", get(v2_attachment))
        .route(
            "/wiki/download/attachments/{page}/{file}",
            get(download_attachment),
        )
        .route("/wiki/api/v2/spaces", get(v2_spaces))
        .route("/wiki/rest/api/space", get(spaces::v1_spaces))
        .route(
            "/wiki/rest/webhooks/1.0/webhook",
            get(|app: App, headers: HeaderMap| hooks::list(app, headers, false)).post(
                |app: App, headers: HeaderMap, body: Bytes| {
                    hooks::create(app, headers, body, false)
                },
            ),
        )
        .route(
            "/wiki/rest/webhooks/1.0/webhook/{id}",
            axum::routing::delete(|app: App, headers: HeaderMap, id: Path<String>| {
                hooks::delete(app, headers, id, false)
            }),
        )
        .route(
            "/wiki/rest/api/webhooks",
            get(|app: App, headers: HeaderMap| hooks::list(app, headers, true)).post(
                |app: App, headers: HeaderMap, body: Bytes| hooks::create(app, headers, body, true),
            ),
        )
        .route(
            "/wiki/rest/api/webhooks/{id}",
            axum::routing::delete(|app: App, headers: HeaderMap, id: Path<String>| {
                hooks::delete(app, headers, id, true)
            }),
        )
        .route(
            "/wiki/api/v2/spaces/{id}/pages",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_space_content(app, headers, id, params, ContentKind::Page)
                },
            ),
        )
        .route(
            "/wiki/api/v2/spaces/{id}/blogposts",
            get(
                |app: App, headers: HeaderMap, id: Path<String>, params: Params| {
                    v2_space_content(app, headers, id, params, ContentKind::Blogpost)
                },
            ),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            track_in_flight,
        ));
    let control = Router::new()
        .route("/_sim/stats", get(sim_stats).delete(sim_reset_stats))
        .route(
            "/_sim/faults",
            get(sim_faults).put(sim_set_faults).delete(sim_clear_faults),
        )
        .route("/_sim/pages", get(sim_pages).post(sim_create))
        .route("/_sim/blogposts", post(sim_create_blog_post))
        .route("/_sim/folders", post(sim_create_folder))
        .route("/_sim/pages/{id}/{action}", post(sim_mutate))
        // Tests create pages over the size bounds they exercise (the default limit is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(SIM_BODY_LIMIT));
    api.merge(control).with_state(shared)
}

/// Largest body the simulator's control routes take.
const SIM_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Counts API requests in flight, so tests can see the client's concurrency limit at work.
async fn track_in_flight(
    State(shared): App,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    {
        let mut state = shared.lock();
        state.in_flight += 1;
        state.stats.max_in_flight = state.stats.max_in_flight.max(state.in_flight);
    }
    let response = next.run(request).await;
    shared.lock().in_flight -= 1;
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    V1,
    V2,
}

/// Bodies to render into a response: (JSON pointer of the placeholder, what to render).
type Bodies = Vec<(String, BodyJob)>;

/// A successful answer whose storage bodies are rendered after the state lock is released, on
/// the blocking pool (a bulk page of large bodies is real CPU work).
struct Reply {
    body: Value,
    bodies: Bodies,
    near_limit: bool,
    link: Option<String>,
}

impl Reply {
    async fn send(self) -> Response {
        let Reply {
            mut body,
            bodies,
            near_limit,
            link,
        } = self;
        if bodies.is_empty() {
            return ok(body, near_limit, link);
        }
        let rendered = tokio::task::spawn_blocking(move || {
            for (pointer, job) in bodies {
                if let Some(slot) = body.pointer_mut(&pointer) {
                    *slot = Value::String(job.render());
                }
            }
            body
        })
        .await;
        match rendered {
            Ok(body) => ok(body, near_limit, link),
            Err(_) => error(
                Api::V2,
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering bodies failed",
            ),
        }
    }
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

fn error(api: Api, status: StatusCode, message: &str) -> Response {
    let body = match api {
        Api::V1 => json!({
            "statusCode": status.as_u16(),
            "data": {"authorized": status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                     "valid": true, "errors": [], "successful": false},
            "message": message,
            "reason": reason(status),
        }),
        Api::V2 => json!({"errors": [{
            "status": status.as_u16(),
            "code": reason(status).to_ascii_uppercase().replace(' ', "_"),
            "title": reason(status),
            "detail": if message.is_empty() { Value::Null } else { json!(message) },
        }]}),
    };
    (status, axum::Json(body)).into_response()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// All values of a parameter, repeated (`id=1&id=2`) or comma-separated (`id=1,2`).
fn param_list(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Counts the request, applies latency, auth and injected faults. On success, says whether the
/// response should carry `X-RateLimit-NearLimit: true`.
async fn guard(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    endpoint: &str,
    api: Api,
) -> Result<bool, Response> {
    let (latency, fault, near_limit, authorized) = {
        let mut state = shared.lock();
        state.count(endpoint);
        let authorized = authorized(&state, headers);
        if !authorized {
            state.stats.unauthorized += 1;
        }
        let fault = if authorized {
            state.roll_fault(path)
        } else {
            None
        };
        let near_limit = state.roll_near_limit();
        (state.faults.latency_ms, fault, near_limit, authorized)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if !authorized {
        return Err(error(
            api,
            StatusCode::UNAUTHORIZED,
            "Unauthorized; scope does not match",
        ));
    }
    if let Some(rule) = fault {
        let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = error(api, status, "injected by the simulator");
        if let Some(value) = rule
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Err(response);
    }
    Ok(near_limit)
}

fn authorized(state: &SimState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let expected = format!("{}:{}", state.config.email, state.config.api_token);
        return base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .is_ok_and(|decoded| decoded == expected.as_bytes());
    }
    if let (Some(token), Some(pat)) = (
        value.strip_prefix("Bearer "),
        &state.config.personal_access_token,
    ) {
        return token.trim() == pat;
    }
    false
}

fn ok(body: Value, near_limit: bool, link: Option<String>) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    if near_limit {
        headers.insert("x-ratelimit-nearlimit", HeaderValue::from_static("true"));
    }
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, value);
    }
    response
}

fn site(headers: &HeaderMap, shared: &Shared) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("http://{host}/wiki"))
        .unwrap_or_else(|| shared.site.clone())
}

fn encode_cursor(raw: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// After this sort key (modified millis, id).
    After(i64, u64),
    /// Past the end: answers an empty page (with `next` under `trailing_empty_page`).
    End,
}

fn decode_cursor(raw: Option<&str>) -> Result<Option<Cursor>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| "invalid cursor".to_owned())?;
    let text = String::from_utf8(bytes).map_err(|_| "invalid cursor".to_owned())?;
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["k", ms, id] => Ok(Some(Cursor::After(
            ms.parse().map_err(|_| "invalid cursor".to_owned())?,
            id.parse().map_err(|_| "invalid cursor".to_owned())?,
        ))),
        ["e", _] => Ok(Some(Cursor::End)),
        _ => Err("invalid cursor".into()),
    }
}

fn limit(params: &[(String, String)], state: &SimState) -> Result<usize, String> {
    let asked = match param(params, "limit") {
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| format!("invalid limit {raw:?}"))?,
        None => DEFAULT_LIMIT,
    };
    let capped = asked.clamp(1, MAX_LIMIT);
    Ok(state
        .faults
        .page_size_cap
        .map_or(capped, |cap| capped.min(cap.max(1))))
}

/// One page of `items` (already in order, keyed by `key`) after `cursor`, and the next cursor.
fn paginate<T>(
    items: Vec<&T>,
    key: impl Fn(&T) -> (i64, u64),
    cursor: Option<Cursor>,
    limit: usize,
    descending: bool,
    trailing_empty: Option<&mut u64>,
) -> (Vec<u64>, Option<String>) {
    let start = match cursor {
        None => 0,
        Some(Cursor::End) => items.len(),
        Some(Cursor::After(ms, id)) => items
            .iter()
            .position(|p| {
                let k = key(p);
                if descending {
                    k < (ms, id)
                } else {
                    k > (ms, id)
                }
            })
            .unwrap_or(items.len()),
    };
    let page: Vec<&T> = items.iter().skip(start).take(limit).copied().collect();
    let more = start + page.len() < items.len();
    let next = match (page.last(), trailing_empty) {
        (Some(last), _) if more => {
            let (ms, id) = key(last);
            Some(encode_cursor(&format!("k:{ms}:{id}")))
        }
        (_, Some(serial)) => {
            *serial += 1;
            Some(encode_cursor(&format!("e:{serial}")))
        }
        _ => None,
    };
    // Every key ends with the item's id.
    (page.iter().map(|p| key(p).1).collect(), next)
}

/// `path?query` with `cursor` replaced, as a relative link.
fn next_link(
    path: &str,
    params: &[(String, String)],
    cursor: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut url = match reqwest::Url::parse(&format!("http://sim{path}")) {
        Ok(url) => url,
        Err(_) => return path.to_owned(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in extra {
            query.append_pair(k, v);
        }
        for (k, v) in params.iter().filter(|(k, _)| k != "cursor" && k != "next") {
            query.append_pair(k, v);
        }
        query.append_pair("cursor", cursor);
    }
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

fn user_v1(index: usize) -> Value {
    let (account, name) = USERS.get(index).copied().unwrap_or(("unknown", "Unknown"));
    json!({"type": "known", "accountId": account, "accountType": "atlassian", "publicName": name,
           "displayName": name, "isExternalCollaborator": false,
           "_expandable": {"operations": "", "personalSpace": ""}})
}

fn content_v1(
    state: &SimState,
    page: &SimPage,
    expand: &[String],
    site: &str,
    bodies: &mut Bodies,
    at: &str,
) -> Value {
    let has = |name: &str| {
        expand
            .iter()
            .any(|e| e == name || e.starts_with(&format!("{name}.")))
    };
    let space = state.space_of(page);
    let key = &space.key;
    let page_webui = webui(state, page);
    let mut value = json!({
        "id": page.id.to_string(),
        "type": page.kind.name(),
        "status": match page.status { PageStatus::Current => "current", PageStatus::Trashed => "trashed" },
        "title": page.title,
        "macroRenderedOutput": {},
        "extensions": {"position": page.position},
        "_links": {
            "webui": page_webui,
            "self": format!("{site}/rest/api/content/{}", page.id),
            "tinyui": format!("/x/{}", page.id),
            "editui": format!("/pages/resumedraft.action?draftId={}", page.id),
        },
    });
    let mut expandable = serde_json::Map::new();
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    if has("space") {
        map.insert(
            "space".into(),
            json!({"id": space.id, "key": key,
            "name": space.name, "type": "global", "status": "current",
            "_links": {"webui": format!("/spaces/{key}")}}),
        );
    } else {
        expandable.insert("space".into(), json!(format!("/rest/api/space/{key}")));
    }
    if has("version") {
        map.insert(
            "version".into(),
            json!({"by": user_v1(page.last_modifier),
            "when": page.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "", "number": page.version, "minorEdit": false,
            "contentTypeModified": false}),
        );
    } else {
        expandable.insert("version".into(), json!(""));
    }
    if has("history") {
        map.insert(
            "history".into(),
            json!({"latest": true, "createdBy": user_v1(page.author),
            "createdDate": page.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
        );
    } else {
        expandable.insert(
            "history".into(),
            json!(format!("/rest/api/content/{}/history", page.id)),
        );
    }
    if has("ancestors") {
        // Folders are content in v1 too: a page's ancestors run through them.
        let ancestors: Vec<Value> = state
            .ancestors(page.id)
            .iter()
            .filter_map(|id| state.pages.get(id))
            .map(|a| json!({"id": a.id.to_string(), "type": a.kind.name(), "status": "current", "title": a.title,
                            "_links": {"webui": webui(state, a)}}))
            .collect();
        map.insert("ancestors".into(), json!(ancestors));
    } else {
        expandable.insert("ancestors".into(), json!(""));
    }
    if has("body") && page.kind != ContentKind::Folder && !state.faults.bodiless.contains(&page.id)
    {
        bodies.push((format!("{at}/body/storage/value"), state.body_job(page)));
        map.insert("body".into(), json!({"storage": {"value": "", "representation": "storage",
            "embeddedContent": []}, "_expandable": {"view": "", "export_view": "", "atlas_doc_format": ""}}));
    } else {
        expandable.insert("body".into(), json!(""));
    }
    if has("metadata") {
        let labels: Vec<Value> = page.labels.iter().enumerate()
            .map(|(i, l)| json!({"prefix": "global", "name": l, "id": (page.id * 16 + i as u64).to_string(), "label": l}))
            .collect();
        map.insert(
            "metadata".into(),
            json!({"labels": {"results": labels, "start": 0, "limit": 200,
            "size": page.labels.len()}, "_expandable": {"properties": "", "likes": ""}}),
        );
    } else {
        expandable.insert("metadata".into(), json!(""));
    }
    expandable.insert(
        "children".into(),
        json!(format!("/rest/api/content/{}/child", page.id)),
    );
    map.insert("_expandable".into(), Value::Object(expandable));
    value
}

/// A v1 comment (`type: comment`), as a CQL search returns it: `container` (its page or blog
/// post), `ancestors` (the comment a reply answers), and `extensions` with its location and, for a
/// top-level inline comment, its resolution and highlighted selection.
fn comment_v1(state: &SimState, comment: &SimComment, expand: &[String], site: &str) -> Value {
    let has = |name: &str| {
        expand
            .iter()
            .any(|e| e == name || e.starts_with(&format!("{name}.")))
    };
    let container = state.pages.get(&comment.container_id);
    let title = container.map_or(String::new(), |p| format!("Re: {}", p.title));
    let comment_webui = container.map_or(String::new(), |p| {
        format!("{}?focusedCommentId={}", webui(state, p), comment.id)
    });
    let mut extensions = json!({"location": location_name(comment.location)});
    if let (Some(resolution), Some(map)) = (comment.resolution, extensions.as_object_mut()) {
        map.insert(
            "resolution".into(),
            json!({"status": resolution, "lastModifier": user_v1(comment.author),
                   "lastModifiedDate": comment.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
        );
        map.insert(
            "inlineProperties".into(),
            json!({"markerRef": format!("marker-{}", comment.id),
                   "originalSelection": comment.selection.clone().unwrap_or_default()}),
        );
    }
    let mut value = json!({
        "id": comment.id.to_string(),
        "type": "comment",
        "status": "current",
        "title": title,
        "extensions": extensions,
        "_links": {
            "webui": comment_webui,
            "self": format!("{site}/rest/api/content/{}", comment.id),
        },
    });
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    let mut expandable = serde_json::Map::new();
    if has("container") {
        if let Some(page) = container {
            map.insert(
                "container".into(),
                json!({"id": page.id.to_string(), "type": page.kind.name(), "status": "current",
                       "title": page.title, "_links": {"webui": webui(state, page)}}),
            );
        }
    } else {
        expandable.insert("container".into(), json!(""));
    }
    if has("ancestors") {
        let ancestors: Vec<Value> = comment
            .parent_comment_id
            .and_then(|parent| state.comments.get(&parent))
            .map(|parent| {
                json!({"id": parent.id.to_string(), "type": "comment", "status": "current",
                       "title": title})
            })
            .into_iter()
            .collect();
        map.insert("ancestors".into(), json!(ancestors));
    } else {
        expandable.insert("ancestors".into(), json!(""));
    }
    if has("version") {
        map.insert(
            "version".into(),
            json!({"by": user_v1(comment.author),
            "when": comment.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "", "number": comment.version, "minorEdit": false}),
        );
    } else {
        expandable.insert("version".into(), json!(""));
    }
    if has("body") {
        map.insert(
            "body".into(),
            json!({"storage": {"value": comment.body, "representation": "storage"}}),
        );
    } else {
        expandable.insert("body".into(), json!(""));
    }
    map.insert("_expandable".into(), Value::Object(expandable));
    value
}

fn page_v2(
    state: &SimState,
    page: &SimPage,
    with_body: bool,
    with_labels: bool,
    bodies: &mut Bodies,
    at: &str,
) -> Value {
    let account = |i: usize| USERS.get(i).map_or("", |u| u.0);
    let webui = webui(state, page);
    let mut value = json!({
        "id": page.id.to_string(),
        "status": match page.status { PageStatus::Current => "current", PageStatus::Trashed => "trashed" },
        "title": page.title,
        "spaceId": page.space_id.to_string(),
        "parentId": page.parent_id.map(|p| p.to_string()),
        "parentType": parent_type(state, page),
        "position": page.position,
        "authorId": account(page.author),
        "ownerId": account(page.author),
        "lastOwnerId": null,
        "createdAt": page.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "version": {
            "createdAt": page.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "",
            "number": page.version,
            "minorEdit": false,
            "authorId": account(page.last_modifier),
        },
        "body": if with_body {
            bodies.push((format!("{at}/body/storage/value"), state.body_job(page)));
            json!({"storage": {"representation": "storage", "value": ""}})
        } else {
            json!({})
        },
        "_links": {
            "editui": format!("/pages/resumedraft.action?draftId={}", page.id),
            "webui": webui,
            "tinyui": format!("/x/{}", page.id),
        },
    });
    // A v2 blog post has no place in the tree (BlogPostSingle / BlogPostBulk).
    if page.kind == ContentKind::Blogpost
        && let Some(map) = value.as_object_mut()
    {
        for field in ["parentId", "parentType", "position"] {
            map.remove(field);
        }
    }
    if with_labels && let Some(map) = value.as_object_mut() {
        let labels: Vec<Value> = page.labels.iter().enumerate()
            .map(|(i, l)| json!({"id": (page.id * 16 + i as u64).to_string(), "name": l, "prefix": "global"}))
            .collect();
        map.insert(
            "labels".into(),
            json!({"results": labels, "meta": {"hasMore": false, "cursor": null},
            "_links": {}}),
        );
    }
    value
}

/// The v2 `parentType` of a page or folder: what its parent is.
fn parent_type(state: &SimState, page: &SimPage) -> Option<&'static str> {
    page.parent_id
        .map(|parent| state.pages.get(&parent).map_or("page", |p| p.kind.name()))
}

/// A v2 folder (`FolderSingle`): a place in the tree, without a body.
fn folder_v2(state: &SimState, folder: &SimPage) -> Value {
    let account = |i: usize| USERS.get(i).map_or("", |u| u.0);
    json!({
        "id": folder.id.to_string(),
        "type": "folder",
        "status": match folder.status { PageStatus::Current => "current", PageStatus::Trashed => "trashed" },
        "title": folder.title,
        "parentId": folder.parent_id.map(|p| p.to_string()),
        "parentType": parent_type(state, folder),
        "position": folder.position,
        "authorId": account(folder.author),
        "ownerId": account(folder.author),
        "createdAt": folder.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "spaceId": folder.space_id.to_string(),
        "version": {
            "createdAt": folder.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "",
            "number": folder.version,
            "minorEdit": false,
            "authorId": account(folder.last_modifier),
        },
        "_links": {"webui": webui(state, folder)},
    })
}

/// A page's, blog post's or folder's place in the web UI, relative to the wiki root.
fn webui(state: &SimState, page: &SimPage) -> String {
    let space_key = &state.space_of(page).key;
    match page.kind {
        ContentKind::Page => format!("/spaces/{space_key}/pages/{}", page.id),
        ContentKind::Blogpost => format!("/spaces/{space_key}/{}", webhook::blog_path(page)),
        ContentKind::Folder => format!("/spaces/{space_key}/folder/{}", page.id),
    }
}

/// The v2 collection of a kind, and the stats name of its endpoints.
fn v2_collection(kind: ContentKind) -> (&'static str, &'static str) {
    match kind {
        ContentKind::Page => ("pages", "page"),
        ContentKind::Blogpost => ("blogposts", "blogpost"),
        ContentKind::Folder => ("folders", "folder"),
    }
}

fn wants_body(params: &[(String, String)]) -> Result<bool, String> {
    match param(params, "body-format") {
        None => Ok(false),
        Some("storage") => Ok(true),
        Some("atlas_doc_format") => Ok(false),
        Some(other) => Err(format!("unsupported body-format {other:?}")),
    }
}

fn statuses(params: &[(String, String)]) -> Result<Vec<PageStatus>, String> {
    let asked = param_list(params, "status");
    if asked.is_empty() {
        return Ok(vec![PageStatus::Current]);
    }
    asked
        .iter()
        .filter(|s| *s != "archived" && *s != "deleted" && *s != "historical" && *s != "draft")
        .map(|s| match s.as_str() {
            "current" => Ok(PageStatus::Current),
            "trashed" => Ok(PageStatus::Trashed),
            other => Err(format!("invalid status {other:?}")),
        })
        .collect()
}

fn parse_id(raw: &str, api: Api) -> Result<u64, Response> {
    raw.parse::<u64>()
        .map_err(|_| error(api, StatusCode::BAD_REQUEST, &format!("invalid id {raw:?}")))
}

/// A v2 listing response: `_links` in the body and/or a `Link` header, per the fault settings.
fn v2_listing(
    state: &SimState,
    results: Vec<Value>,
    bodies: Bodies,
    next: Option<String>,
    site: &str,
    near_limit: bool,
) -> Reply {
    let style = state.faults.v2_links;
    let mut links = json!({"base": site});
    let mut header = None;
    if let Some(next) = next {
        let full = format!("/wiki{next}");
        if style != LinkStyle::HeaderOnly
            && let Some(map) = links.as_object_mut()
        {
            map.insert("next".into(), json!(full));
        }
        if style != LinkStyle::BodyOnly {
            header = Some(format!("<{full}>; rel=\"next\", <{site}>; rel=\"base\""));
        }
    }
    Reply {
        body: json!({"results": results, "_links": links}),
        bodies,
        near_limit,
        link: header,
    }
}

async fn v1_search(State(shared): App, headers: HeaderMap, Query(params): Params) -> Response {
    let near = match guard(
        &shared,
        &headers,
        "/wiki/rest/api/content/search",
        "v1.search",
        Api::V1,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        let Some(raw_cql) = param(&params, "cql") else {
            return error(
                Api::V1,
                StatusCode::BAD_REQUEST,
                "cql parameter is required",
            );
        };
        let filter = match cql::parse(raw_cql, state.config.time_zone) {
            Ok(filter) => filter,
            Err(reason) => {
                return error(
                    Api::V1,
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "com.atlassian.confluence.api.service.exceptions.BadRequestException: Could not parse cql : {raw_cql} ({reason})"
                    ),
                );
            }
        };
        let (limit, cursor) = match (
            limit(&params, &state),
            decode_cursor(param(&params, "cursor")),
        ) {
            (Ok(l), Ok(c)) => (l, c),
            (Err(e), _) | (_, Err(e)) => return error(Api::V1, StatusCode::BAD_REQUEST, &e),
        };
        let expand: Vec<String> = param_list(&params, "expand");
        let descending = filter.order == Some(SortOrder::Desc);
        let ordered = filter.order.is_some();
        let key = move |p: &SimPage| {
            if ordered {
                (p.modified_at.timestamp_millis(), p.id)
            } else {
                (0, p.id)
            }
        };
        let state = &mut *state;
        // Each page's space key, read before the listing borrows the cursor serial.
        let space_keys: HashMap<u64, String> = state
            .spaces()
            .map(|space| (space.id, space.key.clone()))
            .collect();
        let space_key = |page: Option<&SimPage>| {
            page.and_then(|page| space_keys.get(&page.space_id))
                .map_or("", String::as_str)
        };
        let trailing = state
            .faults
            .trailing_empty_page
            .then_some(&mut state.empty_cursor_serial);
        let mut bodies = Bodies::new();
        let (results, next): (Vec<Value>, _) = if filter.attachments {
            let attachment_key = move |a: &SimAttachment| {
                if ordered {
                    (a.modified_at.timestamp_millis(), a.id)
                } else {
                    (0, a.id)
                }
            };
            let mut matching: Vec<&SimAttachment> = state
                .attachments
                .values()
                .filter(|a| {
                    !a.trashed
                        && state
                            .pages
                            .get(&a.container_id)
                            .is_some_and(|p| p.status == PageStatus::Current)
                })
                .filter(|a| {
                    filter.matches(space_key(state.pages.get(&a.container_id)), a.modified_at)
                })
                .collect();
            matching.sort_by_key(|a| attachment_key(a));
            if descending {
                matching.reverse();
            }
            let (ids, next) = paginate(
                matching,
                attachment_key,
                cursor,
                limit,
                descending,
                trailing,
            );
            let results = ids
                .iter()
                .filter_map(|id| state.attachments.get(id))
                .map(|a| attachment_v1(state, a, &expand, &site))
                .collect();
            (results, next)
        } else if filter.comments {
            // Comments of the space's current pages and blog posts (bodies are small: inline).
            let comment_key = move |c: &SimComment| {
                if ordered {
                    (c.modified_at.timestamp_millis(), c.id)
                } else {
                    (0, c.id)
                }
            };
            let mut matching: Vec<&SimComment> = state
                .comments
                .values()
                .filter(|c| {
                    state
                        .pages
                        .get(&c.container_id)
                        .is_some_and(|p| p.status == PageStatus::Current)
                })
                .filter(|c| {
                    filter.matches(space_key(state.pages.get(&c.container_id)), c.modified_at)
                })
                .collect();
            matching.sort_by_key(|c| comment_key(c));
            if descending {
                matching.reverse();
            }
            let (ids, next) = paginate(matching, comment_key, cursor, limit, descending, trailing);
            let results = ids
                .iter()
                .filter_map(|id| state.comments.get(id))
                .map(|c| comment_v1(state, c, &expand, &site))
                .collect();
            (results, next)
        } else {
            let mut matching: Vec<&SimPage> = state
                .pages
                .values()
                .filter(|p| p.status == PageStatus::Current)
                .filter(|p| filter.types.contains(&p.kind))
                .filter(|p| filter.matches(space_key(Some(p)), p.modified_at))
                .collect();
            matching.sort_by_key(|p| key(p));
            if descending {
                matching.reverse();
            }
            let (page_ids, next) = paginate(matching, key, cursor, limit, descending, trailing);
            let results = page_ids
                .iter()
                .filter(|id| !state.faults.cql_hidden.contains(id))
                .filter_map(|id| state.pages.get(id))
                .enumerate()
                .map(|(i, p)| {
                    content_v1(
                        state,
                        p,
                        &expand,
                        &site,
                        &mut bodies,
                        &format!("/results/{i}"),
                    )
                })
                .collect();
            (results, next)
        };
        let mut links = json!({"base": site, "context": "/wiki",
        "self": format!("{site}/rest/api/content/search")});
        if let (Some(next), Some(map)) = (next, links.as_object_mut()) {
            let link = next_link(
                "/rest/api/content/search",
                &params,
                &next,
                &[("next", "true")],
            );
            map.insert("next".into(), json!(link));
        }
        let size = results.len();
        Reply {
            body: json!({"results": results, "start": 0, "limit": limit, "size": size, "_links": links}),
            bodies,
            near_limit: near,
            link: None,
        }
    };
    reply.send().await
}

async fn v1_content(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let path = format!("/wiki/rest/api/content/{id}");
    let near = match guard(&shared, &headers, &path, "v1.content", Api::V1).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V1) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let state = shared.lock();
        let expand = param_list(&params, "expand");
        state.current(id).map(|page| {
            let mut bodies = Bodies::new();
            let body = content_v1(&state, page, &expand, &site, &mut bodies, "");
            Reply {
                body,
                bodies,
                near_limit: near,
                link: None,
            }
        })
    };
    match reply {
        Some(reply) => reply.send().await,
        None => error(
            Api::V1,
            StatusCode::NOT_FOUND,
            &format!("No content found with id: ContentId{{id={id}}}"),
        ),
    }
}

/// v1 `GET /rest/api/content?spaceKey=KEY&title=T` (`type` page by default): the current page of
/// that title in that space, as a one-item (or empty) listing, with what `expand` asks.
async fn v1_content_by_title(
    State(shared): App,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let near = match guard(
        &shared,
        &headers,
        "/wiki/rest/api/content",
        "v1.content.list",
        Api::V1,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let state = shared.lock();
        let kind = match param(&params, "type").unwrap_or("page") {
            "page" => ContentKind::Page,
            "blogpost" => ContentKind::Blogpost,
            other => {
                return error(
                    Api::V1,
                    StatusCode::BAD_REQUEST,
                    &format!("invalid type {other:?}"),
                );
            }
        };
        let space_key = param(&params, "spaceKey");
        let title = param(&params, "title");
        let expand = param_list(&params, "expand");
        let mut bodies = Bodies::new();
        let results: Vec<Value> = state
            .pages
            .values()
            .filter(|p| p.status == PageStatus::Current && p.kind == kind)
            .filter(|p| space_key.is_none_or(|key| state.space_of(p).key == key))
            .filter(|p| title.is_none_or(|title| p.title == title))
            .take(MAX_LIMIT)
            .enumerate()
            .map(|(i, p)| {
                content_v1(
                    &state,
                    p,
                    &expand,
                    &site,
                    &mut bodies,
                    &format!("/results/{i}"),
                )
            })
            .collect();
        let size = results.len();
        Reply {
            body: json!({"results": results, "start": 0, "limit": MAX_LIMIT, "size": size,
                "_links": {"base": site, "context": "/wiki", "self": format!("{site}/rest/api/content")}}),
            bodies,
            near_limit: near,
            link: None,
        }
    };
    reply.send().await
}

/// v2 `GET /api/v2/folders/{id}`: a current folder (404 for other content, as each type answers
/// for its own ids).
async fn v2_folder(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let path = format!("/wiki/api/v2/folders/{id}");
    let near = match guard(&shared, &headers, &path, "v2.folder", Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let state = shared.lock();
    match state.current(id).filter(|p| p.kind == ContentKind::Folder) {
        Some(folder) => ok(folder_v2(&state, folder), near, None),
        None => error(Api::V2, StatusCode::NOT_FOUND, ""),
    }
}

/// v1 `GET /rest/api/user/current`: the API user (the first of the simulated users), with the
/// profile time zone CQL dates are read in (null when the profile hides it).
async fn v1_current_user(State(shared): App, headers: HeaderMap) -> Response {
    let path = "/wiki/rest/api/user/current";
    let near = match guard(&shared, &headers, path, "v1.user.current", Api::V1).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let (account_id, name) = USERS.first().copied().unwrap_or(("", ""));
    let (email, time_zone) = {
        let state = shared.lock();
        (
            state.config.email.clone(),
            state
                .config
                .time_zone_visible
                .then(|| state.config.time_zone.name()),
        )
    };
    ok(
        json!({
            "type": "known",
            "accountId": account_id,
            "accountType": "atlassian",
            "email": email,
            "publicName": name,
            "displayName": name,
            "timeZone": time_zone,
            "isExternalCollaborator": false,
            "_links": {"self": format!("{site}/rest/api/user?accountId={account_id}"), "base": site},
        }),
        near,
        None,
    )
}

async fn v2_bulk(
    State(shared): App,
    headers: HeaderMap,
    Query(params): Params,
    kind: ContentKind,
) -> Response {
    let (collection, _) = v2_collection(kind);
    let path = format!("/wiki/api/v2/{collection}");
    let endpoint = format!("v2.{collection}");
    let near = match guard(&shared, &headers, &path, &endpoint, Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        let ids = param_list(&params, "id");
        if ids.len() > MAX_LIMIT {
            return error(
                Api::V2,
                StatusCode::BAD_REQUEST,
                "id: size must be between 0 and 250",
            );
        }
        let mut wanted = Vec::with_capacity(ids.len());
        for raw in &ids {
            match raw.parse::<u64>() {
                Ok(id) => wanted.push(id),
                Err(_) => {
                    return error(
                        Api::V2,
                        StatusCode::BAD_REQUEST,
                        &format!("invalid id {raw:?}"),
                    );
                }
            }
        }
        let space_ids = param_list(&params, "space-id");
        let (limit, cursor, with_body, statuses) = match (
            limit(&params, &state),
            decode_cursor(param(&params, "cursor")),
            wants_body(&params),
            statuses(&params),
        ) {
            (Ok(l), Ok(c), Ok(b), Ok(s)) => (l, c, b, s),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                return error(Api::V2, StatusCode::BAD_REQUEST, &e);
            }
        };
        let state = &mut *state;
        let trailing = state
            .faults
            .trailing_empty_page
            .then_some(&mut state.empty_cursor_serial);
        let matching: Vec<&SimPage> = state
            .pages
            .values()
            .filter(|p| p.kind == kind && statuses.contains(&p.status))
            .filter(|p| wanted.is_empty() || wanted.contains(&p.id))
            .filter(|p| space_ids.is_empty() || space_ids.contains(&p.space_id.to_string()))
            .collect();
        let (page_ids, next) = paginate(matching, |p| (0, p.id), cursor, limit, false, trailing);
        let mut bodies = Bodies::new();
        let results = page_ids
            .iter()
            .filter_map(|id| state.pages.get(id))
            .enumerate()
            .map(|(i, p)| {
                page_v2(
                    state,
                    p,
                    with_body,
                    false,
                    &mut bodies,
                    &format!("/results/{i}"),
                )
            })
            .collect();
        let next = next.map(|c| next_link(&format!("/api/v2/{collection}"), &params, &c, &[]));
        v2_listing(state, results, bodies, next, &site, near)
    };
    reply.send().await
}

async fn v2_single(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    kind: ContentKind,
) -> Response {
    let (collection, single) = v2_collection(kind);
    let path = format!("/wiki/api/v2/{collection}/{id}");
    let near = match guard(&shared, &headers, &path, &format!("v2.{single}"), Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let reply = {
        let state = shared.lock();
        let (with_body, statuses) = match (wants_body(&params), statuses(&params)) {
            (Ok(b), Ok(s)) => (b, s),
            (Err(e), _) | (_, Err(e)) => return error(Api::V2, StatusCode::BAD_REQUEST, &e),
        };
        let with_labels = param(&params, "include-labels") == Some("true");
        // Each type answers for its own ids only: a blog post is not found among the pages.
        let Some(page) = state
            .pages
            .get(&id)
            .filter(|p| p.kind == kind && statuses.contains(&p.status))
        else {
            return error(Api::V2, StatusCode::NOT_FOUND, "");
        };
        let mut bodies = Bodies::new();
        let body = page_v2(&state, page, with_body, with_labels, &mut bodies, "");
        Reply {
            body,
            bodies,
            near_limit: near,
            link: None,
        }
    };
    reply.send().await
}

async fn v2_ancestors(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let path = format!("/wiki/api/v2/pages/{id}/ancestors");
    let near = match guard(&shared, &headers, &path, "v2.ancestors", Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let state = shared.lock();
    if state
        .current(id)
        .is_none_or(|page| page.kind != ContentKind::Page)
    {
        return error(Api::V2, StatusCode::NOT_FOUND, "");
    }
    let limit = param(&params, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT);
    let chain = state.ancestors(id);
    // Deep chains return the nearest `limit` ancestors; clients ask again for the highest one.
    let nearest = &chain[chain.len().saturating_sub(limit)..];
    let results: Vec<Value> = nearest
        .iter()
        .map(|a| {
            let kind = state.pages.get(a).map_or("page", |p| p.kind.name());
            json!({"id": a.to_string(), "type": kind})
        })
        .collect();
    ok(json!({"results": results, "_links": {}}), near, None)
}

fn location_name(location: CommentLocation) -> &'static str {
    match location {
        CommentLocation::Footer => "footer",
        CommentLocation::Inline => "inline",
    }
}

/// A v2 comment (`PageCommentModel`, `PageInlineCommentModel`, `ChildrenCommentModel`).
fn comment_v2(state: &SimState, comment: &SimComment, with_body: bool) -> Value {
    let account = |i: usize| USERS.get(i).map_or("", |u| u.0);
    let container = state.pages.get(&comment.container_id);
    let title = container.map_or(String::new(), |p| format!("Re: {}", p.title));
    let webui = container.map_or(String::new(), |p| {
        format!("{}?focusedCommentId={}", webui(state, p), comment.id)
    });
    let mut value = json!({
        "id": comment.id.to_string(),
        "status": "current",
        "title": title,
        "version": {
            "createdAt": comment.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "",
            "number": comment.version,
            "minorEdit": false,
            "authorId": account(comment.author),
        },
        "body": if with_body {
            json!({"storage": {"representation": "storage", "value": comment.body}})
        } else {
            json!({})
        },
        "_links": {"webui": webui},
    });
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    match comment.parent_comment_id {
        Some(parent) => {
            map.insert("parentCommentId".into(), json!(parent.to_string()));
        }
        None => {
            let holder = match container.map(|p| p.kind) {
                Some(ContentKind::Blogpost) => "blogPostId",
                _ => "pageId",
            };
            map.insert(holder.into(), json!(comment.container_id.to_string()));
        }
    }
    if let Some(resolution) = comment.resolution {
        map.insert("resolutionStatus".into(), json!(resolution));
        map.insert(
            "properties".into(),
            json!({"inlineMarkerRef": format!("marker-{}", comment.id),
                   "inlineOriginalSelection": comment.selection.clone().unwrap_or_default()}),
        );
    }
    value
}

/// One page of comments (already in id order) as a v2 listing.
fn comment_listing(
    state: &mut SimState,
    matching: Vec<u64>,
    params: &[(String, String)],
    path: &str,
    site: &str,
    near: bool,
) -> Result<Reply, Response> {
    let (limit, cursor, with_body) = match (
        limit(params, state),
        decode_cursor(param(params, "cursor")),
        wants_body(params),
    ) {
        (Ok(l), Ok(c), Ok(b)) => (l, c, b),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            return Err(error(Api::V2, StatusCode::BAD_REQUEST, &e));
        }
    };
    let trailing = state
        .faults
        .trailing_empty_page
        .then_some(&mut state.empty_cursor_serial);
    let (ids, next) = paginate(
        matching.iter().collect(),
        |id: &u64| (0, *id),
        cursor,
        limit,
        false,
        trailing,
    );
    let results = ids
        .iter()
        .filter_map(|id| state.comments.get(id))
        .map(|comment| comment_v2(state, comment, with_body))
        .collect();
    let next = next.map(|c| next_link(path, params, &c, &[]));
    Ok(v2_listing(state, results, Bodies::new(), next, site, near))
}

async fn v2_comments(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    kind: ContentKind,
    location: CommentLocation,
) -> Response {
    let (collection, _) = v2_collection(kind);
    let where_ = location_name(location);
    let path = format!("/api/v2/{collection}/{id}/{where_}-comments");
    let endpoint = format!("v2.{where_}_comments");
    let near = match guard(
        &shared,
        &headers,
        &format!("/wiki{path}"),
        &endpoint,
        Api::V2,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        if state.current(id).is_none_or(|p| p.kind != kind) {
            return error(Api::V2, StatusCode::NOT_FOUND, "");
        }
        let matching = state
            .comments_of(Some(id), None, location)
            .iter()
            .map(|c| c.id)
            .collect();
        match comment_listing(&mut state, matching, &params, &path, &site, near) {
            Ok(reply) => reply,
            Err(response) => return response,
        }
    };
    reply.send().await
}

async fn v2_comment_children(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    location: CommentLocation,
) -> Response {
    let where_ = location_name(location);
    let path = format!("/api/v2/{where_}-comments/{id}/children");
    let near = match guard(
        &shared,
        &headers,
        &format!("/wiki{path}"),
        "v2.comment_children",
        Api::V2,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        if !state
            .comments
            .get(&id)
            .is_some_and(|c| c.location == location)
        {
            return error(Api::V2, StatusCode::NOT_FOUND, "");
        }
        let matching = state
            .comments_of(None, Some(id), location)
            .iter()
            .map(|c| c.id)
            .collect();
        match comment_listing(&mut state, matching, &params, &path, &site, near) {
            Ok(reply) => reply,
            Err(response) => return response,
        }
    };
    reply.send().await
}

async fn v2_spaces(State(shared): App, headers: HeaderMap, Query(params): Params) -> Response {
    let near = match guard(
        &shared,
        &headers,
        "/wiki/api/v2/spaces",
        "v2.spaces",
        Api::V2,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let state = shared.lock();
        let keys = param_list(&params, "keys");
        let ids = param_list(&params, "ids");
        let results = state
            .spaces()
            .filter(|space| {
                (keys.is_empty() || keys.contains(&space.key))
                    && (ids.is_empty() || ids.contains(&space.id.to_string()))
            })
            .map(|space| {
                json!({
                    "id": space.id.to_string(),
                    "key": space.key,
                    "name": space.name,
                    "type": "global",
                    "status": "current",
                    "authorId": USERS.first().map_or("", |u| u.0),
                    "createdAt": "2023-01-02T09:00:00.000Z",
                    "homepageId": state.homepage(space.id).map(|id| id.to_string()),
                    "description": null,
                    "icon": null,
                    "_links": {"webui": format!("/spaces/{}", space.key)},
                })
            })
            .collect();
        v2_listing(&state, results, Bodies::new(), None, &site, near)
    };
    reply.send().await
}

async fn v2_space_content(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    kind: ContentKind,
) -> Response {
    let (collection, _) = v2_collection(kind);
    let path = format!("/wiki/api/v2/spaces/{id}/{collection}");
    let endpoint = format!("v2.space_{collection}");
    let near = match guard(&shared, &headers, &path, &endpoint, Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        let Some(space_id) = state
            .spaces()
            .find(|space| space.id.to_string() == id)
            .map(|space| space.id)
        else {
            return error(Api::V2, StatusCode::NOT_FOUND, "");
        };
        let (limit, cursor, with_body, statuses) = match (
            limit(&params, &state),
            decode_cursor(param(&params, "cursor")),
            wants_body(&params),
            statuses(&params),
        ) {
            (Ok(l), Ok(c), Ok(b), Ok(s)) => (l, c, b, s),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                return error(Api::V2, StatusCode::BAD_REQUEST, &e);
            }
        };
        let root_only = param(&params, "depth") == Some("root");
        let state = &mut *state;
        let trailing = state
            .faults
            .trailing_empty_page
            .then_some(&mut state.empty_cursor_serial);
        let matching: Vec<&SimPage> = state
            .pages
            .values()
            .filter(|p| p.kind == kind && p.space_id == space_id && statuses.contains(&p.status))
            .filter(|p| !root_only || p.parent_id.is_none())
            .collect();
        let (page_ids, next) = paginate(matching, |p| (0, p.id), cursor, limit, false, trailing);
        let mut bodies = Bodies::new();
        let results = page_ids
            .iter()
            .filter_map(|id| state.pages.get(id))
            .enumerate()
            .map(|(i, p)| {
                page_v2(
                    state,
                    p,
                    with_body,
                    false,
                    &mut bodies,
                    &format!("/results/{i}"),
                )
            })
            .collect();
        let next = next.map(|c| {
            next_link(
                &format!("/api/v2/spaces/{id}/{collection}"),
                &params,
                &c,
                &[],
            )
        });
        v2_listing(state, results, bodies, next, &site, near)
    };
    reply.send().await
}

// ----- control plane ------------------------------------------------------------------------

async fn sim_stats(State(shared): App) -> axum::Json<SimStats> {
    axum::Json(shared.lock().stats.clone())
}

async fn sim_reset_stats(State(shared): App) -> StatusCode {
    shared.lock().stats = SimStats::default();
    StatusCode::NO_CONTENT
}

async fn sim_faults(State(shared): App) -> axum::Json<Faults> {
    axum::Json(shared.lock().faults.clone())
}

async fn sim_set_faults(State(shared): App, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            shared.lock().faults = faults;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn sim_clear_faults(State(shared): App) -> StatusCode {
    shared.lock().faults = Faults::default();
    StatusCode::NO_CONTENT
}

pub(crate) fn summary(page: &SimPage) -> Value {
    json!({"id": page.id, "type": page.kind.name(), "title": page.title, "version": page.version, "status": page.status,
           "parent_id": page.parent_id, "modified_at": page.modified_at, "labels": page.labels,
           "space_id": page.space_id})
}

async fn sim_pages(State(shared): App) -> axum::Json<Vec<Value>> {
    axum::Json(shared.lock().pages.values().map(summary).collect())
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response()
    })
}

fn mutation_response(
    result: Result<(SimPage, Option<WebhookDelivery>), MutationError>,
) -> Response {
    match result {
        Ok((page, webhook)) => {
            axum::Json(json!({"page": summary(&page), "webhook": webhook})).into_response()
        }
        Err(e @ MutationError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn sim_create(State(shared): App, body: Bytes) -> Response {
    let request: CreatePage = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    mutation_response(mutate(&shared, WebhookEvent::PageCreated, |s| s.create(request)).await)
}

async fn sim_create_blog_post(State(shared): App, body: Bytes) -> Response {
    let request: CreatePage = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    mutation_response(
        mutate(&shared, WebhookEvent::PageCreated, |s| {
            s.create_blog_post(request)
        })
        .await,
    )
}

async fn sim_create_folder(State(shared): App, body: Bytes) -> Response {
    let request: CreatePage = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    mutation_response(
        mutate(&shared, WebhookEvent::PageCreated, |s| {
            s.create_folder(request)
        })
        .await,
    )
}

async fn sim_mutate(
    State(shared): App,
    Path((id, action)): Path<(u64, String)>,
    body: Bytes,
) -> Response {
    let result = match action.as_str() {
        "edit" => match parse_body::<EditPage>(&body) {
            Ok(r) => mutate(&shared, WebhookEvent::PageUpdated, |s| s.edit(id, r)).await,
            Err(response) => return response,
        },
        "move" => match parse_body::<MovePage>(&body) {
            Ok(r) => mutate(&shared, WebhookEvent::PageMoved, |s| s.move_page(id, r)).await,
            Err(response) => return response,
        },
        "trash"
            if shared
                .lock()
                .pages
                .get(&id)
                .is_some_and(|p| p.kind == ContentKind::Folder) =>
        {
            trash_folder(&shared, id)
                .await
                .map(|(folder, _)| (folder, None))
        }
        "trash" => mutate(&shared, WebhookEvent::PageTrashed, |s| s.trash(id)).await,
        "label" => match parse_body::<LabelPage>(&body) {
            Ok(LabelPage { label, add }) => {
                mutate(&shared, WebhookEvent::label(add), |s| {
                    s.label(id, &label, add)
                })
                .await
            }
            Err(response) => return response,
        },
        "purge" => mutate(&shared, WebhookEvent::PageRemoved, |s| s.purge(id)).await,
        "restore" => mutate(&shared, WebhookEvent::PageRestored, |s| s.restore(id)).await,
        other => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": format!("unknown action {other:?}")})),
            )
                .into_response();
        }
    };
    mutation_response(result)
}

/// Applies a comment mutation and delivers its `comment_*` webhook (the comment with its page
/// under `parent`) when a target is configured.
pub(crate) async fn mutate_comment(
    shared: &Shared,
    event: WebhookEvent,
    apply: impl FnOnce(&mut SimState) -> Result<SimComment, MutationError>,
) -> Result<(SimComment, Option<WebhookDelivery>), MutationError> {
    mutate_attached(
        shared,
        event,
        apply,
        |comment| comment.container_id,
        webhook::comment_payload,
    )
    .await
}

/// Applies an attachment mutation and delivers its `attachment_*` webhook (the attachment with
/// its page as `attachedTo`) when a target is configured.
pub(crate) async fn mutate_attachment(
    shared: &Shared,
    event: WebhookEvent,
    apply: impl FnOnce(&mut SimState) -> Result<SimAttachment, MutationError>,
) -> Result<(SimAttachment, Option<WebhookDelivery>), MutationError> {
    mutate_attached(
        shared,
        event,
        apply,
        |attachment| attachment.container_id,
        webhook::attachment_payload,
    )
    .await
}

/// A mutation of something attached to a page (a comment, an attachment), whose webhook payload
/// carries that page.
async fn mutate_attached<T>(
    shared: &Shared,
    event: WebhookEvent,
    apply: impl FnOnce(&mut SimState) -> Result<T, MutationError>,
    container_of: impl FnOnce(&T) -> u64,
    payload: impl FnOnce(&T, &SimPage, &str, u64, &str) -> serde_json::Value,
) -> Result<(T, Option<WebhookDelivery>), MutationError> {
    let (item, outgoing) = {
        let mut state = shared.lock();
        let item = apply(&mut state)?;
        let target = state.config.webhook_target.clone();
        let outgoing = match (
            target.is_some() || !state.webhooks.is_empty(),
            state.pages.get(&container_of(&item)),
        ) {
            (true, Some(container)) => Some((
                target,
                state.config.webhook_secret.clone(),
                payload(
                    &item,
                    container,
                    &state.space_of(container).key,
                    container.space_id,
                    &shared.site,
                ),
            )),
            _ => None,
        };
        (item, outgoing)
    };
    Ok((item, send_webhook(shared, event, outgoing).await))
}

/// Delivers a webhook (target, secret, body), if there is one, and counts the outcome; the same
/// body goes to the webhooks registered through the API.
async fn send_webhook(
    shared: &Shared,
    event: WebhookEvent,
    outgoing: Option<(Option<String>, Option<String>, serde_json::Value)>,
) -> Option<WebhookDelivery> {
    let (target, secret, body) = outgoing?;
    hooks::deliver_registered(shared, event, &body).await;
    let target = target?;
    let delivery = webhook::deliver(&shared.http, &target, secret.as_deref(), event, &body).await;
    let mut state = shared.lock();
    if delivery.delivered() {
        state.stats.webhooks_delivered += 1;
    } else {
        state.stats.webhooks_failed += 1;
    }
    Some(delivery)
}

/// Applies a mutation and, when a webhook target is configured, delivers the matching webhook
/// before answering (so tests know the hint is on its way).
pub(crate) async fn mutate(
    shared: &Shared,
    event: WebhookEvent,
    apply: impl FnOnce(&mut SimState) -> Result<SimPage, MutationError>,
) -> Result<(SimPage, Option<WebhookDelivery>), MutationError> {
    let (page, event, outgoing) = {
        let mut state = shared.lock();
        let page = apply(&mut state)?;
        let event = event.for_kind(page.kind);
        // Cloud's webhooks name no folder events: a folder's creation, rename or move sends none.
        let target = state.config.webhook_target.clone();
        let outgoing = ((target.is_some() || !state.webhooks.is_empty())
            && page.kind != ContentKind::Folder)
            .then(|| {
                let body = webhook::payload(
                    event,
                    &page,
                    state.last_label.as_deref(),
                    &state.space_of(&page).key,
                    page.space_id,
                    &shared.site,
                );
                (target, state.config.webhook_secret.clone(), body)
            });
        (page, event, outgoing)
    };
    let delivery = send_webhook(shared, event, outgoing).await;
    if let Some(delivery) = &delivery {
        tracing::debug!(event = delivery.event, status = ?delivery.status, "webhook sent");
    }
    Ok((page, delivery))
}

/// Trashes a folder with everything under it and delivers `page_trashed` for each page that went
/// with it (the folder itself has no webhook).
pub(crate) async fn trash_folder(
    shared: &Shared,
    id: u64,
) -> Result<(SimPage, Vec<WebhookDelivery>), MutationError> {
    let (folder, outgoing) = {
        let mut state = shared.lock();
        let (folder, pages) = state.trash_folder(id)?;
        let target = state.config.webhook_target.clone();
        let outgoing: Vec<_> = if target.is_some() || !state.webhooks.is_empty() {
            pages
                .iter()
                .map(|page| {
                    let body = webhook::payload(
                        WebhookEvent::PageTrashed,
                        page,
                        None,
                        &state.space_of(page).key,
                        page.space_id,
                        &shared.site,
                    );
                    (target.clone(), state.config.webhook_secret.clone(), body)
                })
                .collect()
        } else {
            Vec::new()
        };
        (folder, outgoing)
    };
    let mut deliveries = Vec::new();
    for outgoing in outgoing {
        deliveries.extend(send_webhook(shared, WebhookEvent::PageTrashed, Some(outgoing)).await);
    }
    Ok((folder, deliveries))
}

/// An attachment's download link, relative to the wiki root, as v1 and v2 give it.
fn download_link(attachment: &SimAttachment) -> String {
    let mut url = match reqwest::Url::parse("http://sim/download/attachments") {
        Ok(url) => url,
        Err(_) => return String::new(),
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.push(&attachment.container_id.to_string());
        path.push(&attachment.title);
    }
    url.query_pairs_mut()
        .append_pair("version", &attachment.version.to_string())
        .append_pair(
            "modificationDate",
            &attachment.modified_at.timestamp_millis().to_string(),
        )
        .append_pair("api", "v2");
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

/// An attachment's preview in its page's web UI, relative to the wiki root.
fn attachment_webui(state: &SimState, attachment: &SimAttachment) -> String {
    let page = state
        .pages
        .get(&attachment.container_id)
        .map_or(String::new(), |p| webui(state, p));
    format!(
        "{page}?preview=/{}/{}/{}",
        attachment.container_id, attachment.id, attachment.title
    )
}

/// A v1 attachment (`type: attachment`), as a CQL search returns it: `extensions` with its media
/// type and size, `_links.download`, its page under `container` and its `version` when expanded.
fn attachment_v1(
    state: &SimState,
    attachment: &SimAttachment,
    expand: &[String],
    site: &str,
) -> Value {
    let has = |name: &str| {
        expand
            .iter()
            .any(|e| e == name || e.starts_with(&format!("{name}.")))
    };
    let mut value = json!({
        "id": attachment.content_id(),
        "type": "attachment",
        "status": "current",
        "title": attachment.title,
        "metadata": {"mediaType": attachment.media_type, "comment": ""},
        "extensions": {"mediaType": attachment.media_type, "fileSize": attachment.file_size(), "comment": ""},
        "_links": {
            "webui": attachment_webui(state, attachment),
            "download": download_link(attachment),
            "self": format!("{site}/rest/api/content/{}", attachment.content_id()),
        },
    });
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    if has("version") {
        map.insert(
            "version".into(),
            json!({"by": user_v1(attachment.author),
                   "when": attachment.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                   "message": "", "number": attachment.version, "minorEdit": false}),
        );
    }
    if has("container")
        && let Some(page) = state.pages.get(&attachment.container_id)
    {
        map.insert(
            "container".into(),
            json!({"id": page.id.to_string(), "type": page.kind.name(), "status": "current",
                   "title": page.title}),
        );
    }
    value
}

/// A v2 attachment (`AttachmentBulk`, `AttachmentSingle`).
fn attachment_v2(state: &SimState, attachment: &SimAttachment) -> Value {
    let account = USERS.get(attachment.author).map_or("", |u| u.0);
    let webui = attachment_webui(state, attachment);
    let download = download_link(attachment);
    let mut value = json!({
        "id": attachment.content_id(),
        "status": if attachment.trashed { "trashed" } else { "current" },
        "title": attachment.title,
        "createdAt": attachment.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "mediaType": attachment.media_type,
        "mediaTypeDescription": "",
        "comment": "",
        "fileId": format!("{:032x}", attachment.id),
        "fileSize": attachment.file_size(),
        "webuiLink": webui,
        "downloadLink": download,
        "version": {
            "createdAt": attachment.modified_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "message": "",
            "number": attachment.version,
            "minorEdit": false,
            "authorId": account,
        },
        "_links": {"webui": webui, "download": download},
    });
    let holder = match state.pages.get(&attachment.container_id).map(|p| p.kind) {
        Some(ContentKind::Blogpost) => "blogPostId",
        _ => "pageId",
    };
    if let Some(map) = value.as_object_mut() {
        map.insert(holder.into(), json!(attachment.container_id.to_string()));
    }
    value
}

/// v2 `GET /{pages|blogposts}/{id}/attachments`: the current attachments, in id order.
async fn v2_attachments(
    State(shared): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    kind: ContentKind,
) -> Response {
    let (collection, _) = v2_collection(kind);
    let path = format!("/api/v2/{collection}/{id}/attachments");
    let near = match guard(
        &shared,
        &headers,
        &format!("/wiki{path}"),
        "v2.attachments",
        Api::V2,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match parse_id(&id, Api::V2) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let reply = {
        let mut state = shared.lock();
        if state.current(id).is_none_or(|p| p.kind != kind) {
            return error(Api::V2, StatusCode::NOT_FOUND, "");
        }
        let (limit, cursor) = match (
            limit(&params, &state),
            decode_cursor(param(&params, "cursor")),
        ) {
            (Ok(l), Ok(c)) => (l, c),
            (Err(e), _) | (_, Err(e)) => return error(Api::V2, StatusCode::BAD_REQUEST, &e),
        };
        let matching: Vec<u64> = state.attachments_of(id).iter().map(|a| a.id).collect();
        let state = &mut *state;
        let trailing = state
            .faults
            .trailing_empty_page
            .then_some(&mut state.empty_cursor_serial);
        let (ids, next) = paginate(
            matching.iter().collect(),
            |id: &u64| (0, *id),
            cursor,
            limit,
            false,
            trailing,
        );
        let results = ids
            .iter()
            .filter_map(|id| state.attachments.get(id))
            .map(|a| attachment_v2(state, a))
            .collect();
        let next = next.map(|c| next_link(&path, &params, &c, &[]));
        v2_listing(state, results, Bodies::new(), next, &site, near)
    };
    reply.send().await
}

/// The numeric part of an attachment id (`att123` or `123`).
fn attachment_number(raw: &str) -> Result<u64, Response> {
    parse_id(raw.strip_prefix("att").unwrap_or(raw), Api::V2)
}

/// v2 `GET /attachments/{id}`.
async fn v2_attachment(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let path = format!("/wiki/api/v2/attachments/{id}");
    let near = match guard(&shared, &headers, &path, "v2.attachment", Api::V2).await {
        Ok(near) => near,
        Err(response) => return response,
    };
    let id = match attachment_number(&id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let body = {
        let state = shared.lock();
        match state.attachments.get(&id) {
            Some(attachment) => attachment_v2(&state, attachment),
            None => return error(Api::V2, StatusCode::NOT_FOUND, ""),
        }
    };
    ok(body, near, None)
}

/// `GET /download/attachments/{pageId}/{fileName}?version=N`: the file's bytes at that version
/// (the current one without it).
async fn download_attachment(
    State(shared): App,
    headers: HeaderMap,
    Path((page, file)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    let path = format!("/wiki/download/attachments/{page}/{file}");
    if let Err(response) = guard(&shared, &headers, &path, "download", Api::V1).await {
        return response;
    }
    let page = match parse_id(&page, Api::V1) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let version = match param(&params, "version").map(str::parse::<u64>) {
        None => None,
        Some(Ok(version)) => Some(version),
        Some(Err(_)) => return error(Api::V1, StatusCode::BAD_REQUEST, "invalid version"),
    };
    let found = {
        let state = shared.lock();
        state
            .attachments
            .values()
            .find(|a| a.container_id == page && a.title == file && !a.trashed)
            .and_then(|a| Some((a.media_type.clone(), a.data(version)?.to_vec())))
    };
    match found {
        Some((media_type, data)) => {
            let content_type = HeaderValue::from_str(&media_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, content_type)], data).into_response()
        }
        None => error(Api::V1, StatusCode::NOT_FOUND, "attachment not found"),
    }
}
