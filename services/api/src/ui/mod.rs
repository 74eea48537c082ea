//! The web UI, served by the api at `/` in the same process: sources with live sync progress,
//! adding a source, search, pages and dead letters. Server-rendered HTML and one small static
//! script; a Content-Security-Policy without inline scripts or styles.
//!
//! Signing in exchanges the api key for a session cookie ([`session`]). Every state-changing form
//! carries the session's CSRF token, and a POST that says it comes from another site (`Origin`,
//! `Sec-Fetch-Site`) is refused before its token is even read.

mod dead_letters;
mod html;
mod pages;
mod session;
mod sources;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use html::{Nav, esc, page};
pub use session::Session;
use session::{COOKIE as SESSION_COOKIE, LIFETIME_SECS, Sessions};

const SCRIPT: &str = include_str!("assets/ui.js");
const STYLE: &str = include_str!("assets/ui.css");
/// The largest form the UI accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
pub(crate) struct UiState {
    app: AppState,
    sessions: Arc<Sessions>,
}

/// The UI's routes (merged into the api's router).
pub fn router(app: AppState) -> Router {
    let sessions = Arc::new(Sessions::new(&app.inner.api_key_digest));
    let state = UiState { app, sessions };
    let signed_in = Router::new()
        .route("/", get(home))
        .route("/sources", get(sources::list))
        .route("/sources/new", get(sources::new_form).post(sources::create))
        .route("/sources/{key}", get(sources::detail))
        .route("/sources/{key}/progress", get(sources::progress))
        .route("/sources/{key}/sync", post(sources::sync))
        .route(
            "/sources/{key}/remove",
            get(sources::confirm_remove).post(sources::remove),
        )
        .route("/search", get(pages::search))
        .route("/pages/{source}/{page}", get(pages::show))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/retry", post(dead_letters::retry))
        .route("/signout", post(sign_out))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/signin", get(sign_in_form).post(sign_in))
        .route("/assets/ui.js", get(script))
        .route("/assets/ui.css", get(style))
        .merge(signed_in)
        .route_layer(middleware::from_fn(crate::observe))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
        ],
        body,
    )
        .into_response()
}

async fn home() -> Response {
    redirect("/sources")
}

/// A 303 to a path of this UI.
pub(crate) fn redirect(location: &str) -> Response {
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// A value of the request's cookie header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// A POST that its browser says comes from another site (or from no site at all).
fn cross_site(headers: &HeaderMap) -> bool {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or("");
            origin_host != host
        }
        _ => false,
    }
}

/// The value of one field of an urlencoded form.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Signed-in routes: a GET without a session goes to the sign-in page; a POST needs a session,
/// a same-site origin and the session's CSRF token.
async fn require_session(State(state): State<UiState>, request: Request, next: Next) -> Response {
    let session =
        cookie(request.headers(), SESSION_COOKIE).and_then(|value| state.sessions.verify(value));
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let Some(session) = session else {
        if reading {
            let next = request
                .uri()
                .path_and_query()
                .map_or("/", |path| path.as_str());
            return redirect(&format!("/signin?next={}", html::enc(next)));
        }
        return refused("Sign in first: this form came without a session (or from another site).");
    };
    let mut request = request;
    if !reading {
        if cross_site(request.headers()) {
            return refused("This form was sent from another site, so it was not carried out.");
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return refused("The form is too large.");
        };
        let token = form_value(&bytes, "csrf").unwrap_or_default();
        if !state.sessions.csrf_matches(&session, &token) {
            return refused(
                "This form has expired or did not come from this site. Reload the page and try again.",
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

fn refused(message: &str) -> Response {
    let body = format!(
        r#"<h1>Refused</h1><p class="error" role="alert">{}</p><p><a href="/">Back to Pagestream</a></p>"#,
        esc(message)
    );
    (
        StatusCode::FORBIDDEN,
        Html(page("Refused", None, Nav::None, &body)),
    )
        .into_response()
}

/// Where to go after signing in: a path of this site only.
fn local_path(next: Option<String>) -> String {
    next.filter(|next| next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'))
        .unwrap_or_else(|| "/sources".to_owned())
}

fn sign_in_page(next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|error| {
            format!(
                r#"<p class="error" id="key-error" role="alert">{}</p>"#,
                esc(error)
            )
        })
        .unwrap_or_default();
    let described = if error.is_empty() {
        ""
    } else {
        r#" aria-describedby="key-error" aria-invalid="true""#
    };
    let body = format!(
        r#"<h1>Sign in</h1>
<form method="post" action="/signin" class="card narrow">
<input type="hidden" name="next" value="{next}">
<div class="field"><label for="f-key">Api key</label>
<p class="hint">The <code>PAGESTREAM_API_KEY</code> the api was started with.</p>
<input id="f-key" name="key" type="password" autocomplete="current-password" required autofocus{described}>{error}</div>
<button type="submit">Sign in</button>
</form>"#,
        next = esc(next),
    );
    page("Sign in", None, Nav::None, &body)
}

async fn sign_in_form(request: Request) -> Html<String> {
    let next = request
        .uri()
        .query()
        .and_then(|query| form_value(query.as_bytes(), "next"));
    Html(sign_in_page(&local_path(next), None))
}

async fn sign_in(State(state): State<UiState>, request: Request) -> Response {
    if cross_site(request.headers()) {
        return refused("This form was sent from another site, so it was not carried out.");
    }
    let secure = request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes() == b"https");
    let Ok(body) = to_bytes(request.into_body(), MAX_FORM_BYTES).await else {
        return refused("The form is too large.");
    };
    let next = local_path(form_value(&body, "next"));
    let key = form_value(&body, "key").unwrap_or_default();
    if !state.app.key_matches(key.trim()) {
        tracing::info!("ui sign-in refused: wrong api key");
        return (
            StatusCode::UNAUTHORIZED,
            Html(sign_in_page(&next, Some("That is not the api key."))),
        )
            .into_response();
    }
    let (_, value) = state.sessions.issue();
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = redirect(&next);
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

async fn sign_out(
    State(state): State<UiState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    state.sessions.revoke(&session);
    let mut response = redirect("/signin");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static(
            "pagestream_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// An error shown as a page, with the api's message.
pub(crate) struct UiError {
    error: ApiError,
    session: Option<Session>,
}

impl UiError {
    pub fn new(error: ApiError, session: &Session) -> Self {
        Self {
            error,
            session: Some(session.clone()),
        }
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            session: None,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = match self.error.code {
            ErrorCode::SourceNotFound | ErrorCode::PageNotFound | ErrorCode::SyncRunNotFound => {
                "Not found"
            }
            ErrorCode::DependencyUnavailable => "Unavailable",
            _ => "Something went wrong",
        };
        let body = format!(
            r#"<h1>{title}</h1><p class="error" role="alert">{}</p><p><a href="/sources">Back to the sources</a></p>"#,
            esc(&self.error.message)
        );
        (
            self.error.code.status(),
            Html(page(title, self.session.as_ref(), Nav::None, &body)),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognised() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://localhost:9000"),
        ])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/search?q=x".into())), "/search?q=x");
        assert_eq!(local_path(Some("//evil.example/".into())), "/sources");
        assert_eq!(local_path(Some("https://evil.example/".into())), "/sources");
        assert_eq!(local_path(Some("/\\evil.example".into())), "/sources");
        assert_eq!(local_path(None), "/sources");
    }

    #[test]
    fn form_values_and_cookies_are_read() {
        assert_eq!(
            form_value(b"a=1&csrf=ab%20c&x", "csrf").as_deref(),
            Some("ab c")
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=b; pagestream_session=v.1"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("v.1"));
    }
}
