//! The web UI over HTTP: signing in, sessions, CSRF and cross-site refusals, the security headers,
//! and a hostile page's Markdown rendered inert. (tests/browser checks the same in Chromium.)

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use uuid::Uuid;

use crate::support::{self, API_KEY, SeedPage, seed_page, seed_source};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Signs in; returns the `Cookie` header value and the page's CSRF token.
async fn sign_in(base: &str) -> (String, String) {
    let http = client();
    let response = http
        .post(format!("{base}/signin"))
        .header("content-type", FORM)
        .body(format!("key={API_KEY}&next=%2Fsources"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/sources");
    let set_cookie = response.headers()[SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(API_KEY), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();
    let page = http
        .get(format!("{base}/sources"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("sources");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.expect("html");
    assert!(!html.contains(API_KEY));
    let token = html
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_owned();
    (cookie, token)
}

#[tokio::test]
async fn signing_in_takes_the_api_key_and_nothing_else() {
    let api = support::start(false).await;
    let http = client();
    let response = http
        .get(format!("{}/sources", api.base))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/signin?next=%2Fsources");

    let wrong = http
        .post(format!("{}/signin", api.base))
        .header("content-type", FORM)
        .body("key=not-the-api-key-at-all")
        .send()
        .await
        .expect("wrong key");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(
        wrong
            .text()
            .await
            .expect("html")
            .contains("That is not the api key.")
    );

    // A forged or tampered cookie is no session.
    let forged = http
        .get(format!("{}/sources", api.base))
        .header("cookie", "pagestream_session=9999999999.abc.00")
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);

    // Signing out ends the session.
    let (cookie, token) = sign_in(&api.base).await;
    let out = http
        .post(format!("{}/signout", api.base))
        .header("cookie", &cookie)
        .header("content-type", FORM)
        .body(format!("csrf={token}"))
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = http
        .get(format!("{}/sources", api.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("after");
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn state_changing_forms_need_the_token_and_the_same_site() {
    let api = support::start(false).await;
    let (cookie, token) = sign_in(&api.base).await;
    let http = client();
    let retry = |body: String, origin: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/dead-letters/retry", api.base))
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let refused = retry("all=1".into(), None).await.expect("no token");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = retry(format!("all=1&csrf={}", "0".repeat(64)), None)
        .await
        .expect("wrong token");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = retry(format!("all=1&csrf={token}"), Some("https://evil.example"))
        .await
        .expect("cross-site");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = retry(format!("all=1&csrf={token}"), None)
        .await
        .expect("retry");
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        done.text().await
    );
    // Without a session, a POST is refused rather than redirected.
    let anonymous = http
        .post(format!("{}/sources/eng/sync", api.base))
        .header("content-type", FORM)
        .body(format!("csrf={token}"))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_hostile_page_is_rendered_inert() {
    let api = support::start(false).await;
    let source = Uuid::new_v4();
    seed_source(&api.pool, source, "docs").await;
    seed_page(
        &api.pool,
        source,
        &SeedPage {
            page_id: "4242",
            title: "<img src=x onerror=alert(1)> Hostile",
            path: "/4242",
            labels: &["<b>label</b>"],
            jira: &["SEC-1"],
            mentions: &[],
            deleted: false,
            last_modified: Utc::now(),
            chunks: &[(
                "Hostile",
                "<script>alert('x')</script>\n\n<img src=x onerror=alert(2)>\n\n\
                 [link](javascript:alert(3)) <a href=\"javascript:alert(4)\">a</a> **bold**",
            )],
        },
    )
    .await;
    let (cookie, _) = sign_in(&api.base).await;
    let html = client()
        .get(format!("{}/pages/docs/4242", api.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("<strong>bold</strong>"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt; Hostile"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;label&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(!html.to_lowercase().contains("javascript:"), "{html}");
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the UI's own script: {html}"
    );
}
