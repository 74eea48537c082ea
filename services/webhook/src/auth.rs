//! Authentication of deliveries, per source: every scheme is keyed by the source's `webhook_secret`,
//! and a source accepts whichever of them its sender uses (they are equally strong, and a Cloud site
//! may deliver both through a Connect app and through Automation):
//!
//! - Data Center: `X-Hub-Signature: sha256=<hex>`, HMAC-SHA256 of the raw body.
//! - Cloud Connect: a JWT (HS256 with the app's shared secret) in `Authorization: JWT <token>` or the
//!   `jwt` query parameter, whose `qsh` claim hashes the canonical request (method, path, query)
//!   so that a token cannot be replayed against another URL. The issuer must be the Connect app's
//!   `clientKey` stored with the source; `iat` and `exp` must hold now (with a leeway) and be at most
//!   a maximum lifetime apart. Signature and algorithm are checked by `jsonwebtoken`.
//! - Confluence Automation: `X-Automation-Webhook-Token: <secret>`.
//!
//! Every comparison with a secret-derived value is constant-time. The signing half ([`hub_signature`],
//! [`connect_jwt`]) is for senders: the Confluence simulator and tests.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const HUB_SIGNATURE_HEADER: &str = "x-hub-signature";
pub const AUTOMATION_TOKEN_HEADER: &str = "x-automation-webhook-token";

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded (Atlassian's
/// canonical query rules: space is `%20`, `*` is `%2A`, `~` is kept).
const QUERY_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a delivery proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    HubSignature,
    ConnectJwt,
    AutomationToken,
    /// Cloud's site-admin webhooks, unsigned: the secret is in the URL's path.
    PathSecret,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::HubSignature => "hub_signature",
            Scheme::ConnectJwt => "connect_jwt",
            Scheme::AutomationToken => "automation_token",
            Scheme::PathSecret => "path_secret",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send X-Hub-Signature, a Connect JWT or X-Automation-Webhook-Token")]
    Missing,
    #[error("the source has no webhook secret")]
    NoSecret,
    #[error("malformed X-Hub-Signature (expected sha256=<hex>)")]
    MalformedSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("malformed jwt")]
    MalformedJwt,
    #[error("jwt algorithm must be HS256")]
    JwtAlgorithm,
    #[error("jwt has expired")]
    JwtExpired,
    #[error("jwt is not valid yet")]
    JwtNotYetValid,
    #[error("jwt lives longer than allowed")]
    JwtLifetime,
    #[error("jwt issuer is not the source's connect client key")]
    JwtIssuer,
    #[error("jwt query string hash does not match the request")]
    QshMismatch,
    #[error("token does not match")]
    BadToken,
    #[error("no such source")]
    UnknownSource,
}

impl AuthError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::NoSecret => "no_secret",
            AuthError::MalformedSignature | AuthError::MalformedJwt => "malformed",
            AuthError::BadSignature | AuthError::BadToken => "mismatch",
            AuthError::JwtAlgorithm => "jwt_algorithm",
            AuthError::JwtExpired => "jwt_expired",
            AuthError::JwtNotYetValid => "jwt_not_yet_valid",
            AuthError::JwtLifetime => "jwt_lifetime",
            AuthError::JwtIssuer => "jwt_issuer",
            AuthError::QshMismatch => "qsh_mismatch",
            AuthError::UnknownSource => "unknown_source",
        }
    }
}

/// What of a request authentication looks at.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks a delivery against a source's secret; `now` is in Unix seconds.
pub fn authenticate(
    request: &SignedRequest<'_>,
    secret: Option<&str>,
    now: i64,
    jwt: &JwtPolicy<'_>,
) -> Result<Scheme, AuthError> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .map(|value| value.to_str().map_err(|_| AuthError::Missing))
    };
    let token = jwt_of(request);
    let (scheme, credential) = if let Some(signature) = header(HUB_SIGNATURE_HEADER) {
        (Scheme::HubSignature, signature?)
    } else if let Some(token) = token.as_deref() {
        (Scheme::ConnectJwt, token)
    } else if let Some(token) = header(AUTOMATION_TOKEN_HEADER) {
        (Scheme::AutomationToken, token?)
    } else {
        return Err(AuthError::Missing);
    };
    let secret = secret
        .filter(|secret| !secret.is_empty())
        .ok_or(AuthError::NoSecret)?;
    match scheme {
        Scheme::HubSignature => verify_hub_signature(credential, secret, request.body),
        Scheme::ConnectJwt => verify_connect_jwt(credential, secret, request, now, jwt),
        Scheme::AutomationToken | Scheme::PathSecret => verify_token(credential, secret),
    }?;
    Ok(scheme)
}

fn jwt_of(request: &SignedRequest<'_>) -> Option<String> {
    let from_header = request
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("JWT "))
        .map(|token| token.trim().to_owned());
    from_header.or_else(|| {
        query_pairs(request.query?)
            .find(|(name, _)| name == "jwt")
            .map(|(_, value)| value)
    })
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac accepts keys of any length"),
    }
}

fn verify_hub_signature(header: &str, secret: &str, body: &[u8]) -> Result<(), AuthError> {
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(AuthError::MalformedSignature)?;
    let signature = hex::decode(hex_digest).map_err(|_| AuthError::MalformedSignature)?;
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)
}

/// Checks the secret in a delivery's URL path against the source's (none: refused).
pub fn verify_path_secret(given: &str, secret: Option<&str>) -> Result<Scheme, AuthError> {
    let secret = secret
        .filter(|secret| !secret.is_empty())
        .ok_or(AuthError::NoSecret)?;
    verify_token(given, secret).map(|()| Scheme::PathSecret)
}

fn verify_token(token: &str, secret: &str) -> Result<(), AuthError> {
    // Comparing digests keeps even the secret's length out of the timing.
    let given = Sha256::digest(token.as_bytes());
    let expected = Sha256::digest(secret.as_bytes());
    if bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(AuthError::BadToken)
    }
}

/// The claims of a Connect JWT that are checked.
#[derive(Deserialize, serde::Serialize)]
struct ConnectClaims {
    iss: String,
    iat: i64,
    exp: i64,
    qsh: String,
}

/// What a Connect JWT must satisfy besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct JwtPolicy<'a> {
    /// The Connect app's `clientKey`, stored with the source at install time: the only issuer
    /// accepted. `None` refuses every JWT.
    pub issuer: Option<&'a str>,
    /// Clock skew tolerated on `iat` and `exp`, in seconds.
    pub leeway_secs: i64,
    /// Longest `exp - iat` accepted, in seconds (Confluence issues tokens for 3 minutes).
    pub max_lifetime_secs: i64,
}

fn verify_connect_jwt(
    token: &str,
    secret: &str,
    request: &SignedRequest<'_>,
    now: i64,
    policy: &JwtPolicy<'_>,
) -> Result<(), AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    let issuer = policy.issuer.ok_or(AuthError::JwtIssuer)?;
    // HS256 only: never `none`, never an algorithm the sender picks. Times are checked below
    // against `now`, so that they are checked against one clock, with one leeway.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[issuer]);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())
        .map_err(|_| AuthError::NoSecret)?;
    let claims = jsonwebtoken::decode::<ConnectClaims>(token, &key, &validation)
        .map_err(|error| match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm => AuthError::JwtAlgorithm,
            ErrorKind::InvalidIssuer => AuthError::JwtIssuer,
            _ => AuthError::MalformedJwt,
        })?
        .claims;
    if claims.exp.saturating_add(policy.leeway_secs) < now {
        return Err(AuthError::JwtExpired);
    }
    if claims.iat.saturating_sub(policy.leeway_secs) > now {
        return Err(AuthError::JwtNotYetValid);
    }
    if claims.exp.saturating_sub(claims.iat) > policy.max_lifetime_secs || claims.exp < claims.iat {
        return Err(AuthError::JwtLifetime);
    }
    let expected = query_string_hash(request.method, request.path, request.query);
    if !bool::from(claims.qsh.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(AuthError::QshMismatch);
    }
    Ok(())
}

/// The `qsh` claim of a request: hex SHA-256 of its canonical request.
pub fn query_string_hash(method: &str, path: &str, query: Option<&str>) -> String {
    hex::encode(Sha256::digest(
        canonical_request(method, path, query).as_bytes(),
    ))
}

/// Atlassian's canonical request: `METHOD&uri&query`.
fn canonical_request(method: &str, path: &str, query: Option<&str>) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query.unwrap_or(""))
    )
}

/// The path, never empty, without a trailing `/` (unless it is `/`), `&` escaped so that it cannot
/// pass for the separator.
fn canonical_uri(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let uri = if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    };
    uri.replace('&', "%26")
}

/// Parameters but `jwt`, names and values percent-encoded, sorted by name; the sorted values of a
/// repeated name joined by `,`.
fn canonical_query(query: &str) -> String {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in query_pairs(query).filter(|(name, _)| name != "jwt") {
        params
            .entry(encode(&name))
            .or_default()
            .push(encode(&value));
    }
    params
        .into_iter()
        .map(|(name, mut values)| {
            values.sort();
            format!("{name}={}", values.join(","))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
}

fn decode_component(component: &str) -> String {
    percent_decode_str(&component.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(component: &str) -> String {
    utf8_percent_encode(component, QUERY_ENCODE_SET).to_string()
}

/// The `X-Hub-Signature` value a Data Center instance sends for `body`.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A Connect JWT as Confluence Cloud signs one for a request (`iat` = `issued_at`, Unix seconds).
pub fn connect_jwt(
    secret: &str,
    issuer: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    issued_at: i64,
    lifetime_secs: i64,
) -> String {
    let claims = ConnectClaims {
        iss: issuer.to_owned(),
        iat: issued_at,
        exp: issued_at + lifetime_secs,
        qsh: query_string_hash(method, path, query),
    };
    // Signing with HMAC fails only for an empty key, which no sender has.
    jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .and_then(|key| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "s3cr3t-shared";
    const CLIENT_KEY: &str = "client-key";
    const POLICY: JwtPolicy<'static> = JwtPolicy {
        issuer: Some(CLIENT_KEY),
        leeway_secs: 30,
        max_lifetime_secs: 600,
    };
    const NO_JWT: JwtPolicy<'static> = JwtPolicy {
        issuer: None,
        leeway_secs: 0,
        max_lifetime_secs: 0,
    };

    fn request<'a>(
        headers: &'a HeaderMap,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/webhooks/confluence/eng/page_updated",
            query,
            headers,
            body,
        }
    }

    #[test]
    fn qsh_matches_a_token_a_product_issued() {
        // A request Jira signed; its token's qsh was 3a6ff1b6…ef346de.
        let query = "lic=none&tz=Europe%2FMoscow&cp=%2Fjira&user_key=admin&loc=en-US&user_id=admin\
                     &jwt=eyJ0eXAiOiJKV1QifQ.e30.x&xdm_e=http%3A%2F%2Flocalhost%3A2990\
                     &xdm_c=channel-servlet-click-me&xdm_p=1";
        assert_eq!(
            query_string_hash("get", "/addon/", Some(query)),
            "3a6ff1b66f60eb275d0e4cb6be4261d5d3b0216b91c58dc6524509227ef346de"
        );
    }

    #[test]
    fn canonical_request_follows_the_rules() {
        assert_eq!(canonical_request("post", "", None), "POST&/&");
        assert_eq!(canonical_request("GET", "/", Some("")), "GET&/&");
        assert_eq!(
            canonical_request("POST", "/a&b/", Some("b=2&a=x+y&a=*~&c")),
            "POST&/a%26b&a=%2A~,x%20y&b=2&c="
        );
        assert_eq!(
            canonical_request("POST", "/hook", Some("jwt=abc&user_id=a%2Bb")),
            "POST&/hook&user_id=a%2Bb"
        );
    }

    #[test]
    fn hub_signatures_verify_in_constant_time_and_reject_the_rest() {
        let body = br#"{"event":"page_updated"}"#;
        let mut headers = HeaderMap::new();
        let signature = hub_signature(SECRET, body);
        headers.insert(
            HUB_SIGNATURE_HEADER,
            HeaderValue::from_str(&signature.to_uppercase().replace("SHA256=", "sha256="))
                .expect("header"),
        );
        let ok = authenticate(&request(&headers, None, body), Some(SECRET), 0, &NO_JWT);
        assert_eq!(ok, Ok(Scheme::HubSignature));
        for (value, expected) in [
            (hub_signature("other", body), AuthError::BadSignature),
            (
                signature.replace("sha256=", "sha1="),
                AuthError::MalformedSignature,
            ),
            ("sha256=zz".to_owned(), AuthError::MalformedSignature),
        ] {
            headers.insert(
                HUB_SIGNATURE_HEADER,
                HeaderValue::from_str(&value).expect("header"),
            );
            let result = authenticate(&request(&headers, None, body), Some(SECRET), 0, &NO_JWT);
            assert_eq!(result, Err(expected));
        }
        headers.insert(
            HUB_SIGNATURE_HEADER,
            HeaderValue::from_str(&signature).expect("header"),
        );
        let tampered = br#"{"event":"page_removed"}"#;
        assert_eq!(
            authenticate(&request(&headers, None, tampered), Some(SECRET), 0, &NO_JWT),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            authenticate(&request(&headers, None, body), None, 0, &NO_JWT),
            Err(AuthError::NoSecret)
        );
    }

    /// A token with the given header and claims, signed with `secret` over HS256 whatever the header
    /// says (a forger's tool).
    fn forged(secret: &str, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = mac(secret);
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    #[test]
    fn connect_jwts_are_checked_for_signature_times_issuer_algorithm_and_qsh() {
        let path = "/webhooks/confluence/eng/page_updated";
        let now = 1_700_000_000;
        let token = connect_jwt(SECRET, CLIENT_KEY, "POST", path, Some("a=1"), now, 180);
        let check_with = |token: &str, query: &str, at: i64, policy: &JwtPolicy<'_>| {
            let query = format!("{query}&jwt={token}");
            authenticate(
                &request(&HeaderMap::new(), Some(&query), b"{}"),
                Some(SECRET),
                at,
                policy,
            )
        };
        let check = |token: &str, query: &str, at: i64| check_with(token, query, at, &POLICY);
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("JWT {token}")).expect("header"),
        );
        assert_eq!(
            authenticate(
                &request(&headers, Some("a=1"), b"{}"),
                Some(SECRET),
                now + 10,
                &POLICY
            ),
            Ok(Scheme::ConnectJwt)
        );
        // In the query instead of the header; the jwt parameter is not part of the hash.
        assert_eq!(check(&token, "a=1", now), Ok(Scheme::ConnectJwt));
        // Within the leeway, then past it.
        assert_eq!(check(&token, "a=1", now + 200), Ok(Scheme::ConnectJwt));
        assert_eq!(check(&token, "a=1", now + 211), Err(AuthError::JwtExpired));
        // Issued in the future: within the leeway, then beyond it.
        assert_eq!(check(&token, "a=1", now - 30), Ok(Scheme::ConnectJwt));
        assert_eq!(
            check(&token, "a=1", now - 31),
            Err(AuthError::JwtNotYetValid)
        );
        // The token was issued for another query string.
        assert_eq!(check(&token, "a=2", now), Err(AuthError::QshMismatch));
        // Longer-lived than allowed, or expiring before it was issued.
        let long = connect_jwt(SECRET, CLIENT_KEY, "POST", path, Some("a=1"), now, 601);
        assert_eq!(check(&long, "a=1", now), Err(AuthError::JwtLifetime));
        let backwards = connect_jwt(SECRET, CLIENT_KEY, "POST", path, Some("a=1"), now, -1);
        assert_eq!(check(&backwards, "a=1", now), Err(AuthError::JwtLifetime));
        // Another app's token, signed with the right secret, or any token for a source without a
        // stored client key.
        let stranger = connect_jwt(SECRET, "another-app", "POST", path, Some("a=1"), now, 180);
        assert_eq!(check(&stranger, "a=1", now), Err(AuthError::JwtIssuer));
        let no_issuer = JwtPolicy {
            issuer: None,
            ..POLICY
        };
        assert_eq!(
            check_with(&token, "a=1", now, &no_issuer),
            Err(AuthError::JwtIssuer)
        );

        let wrong_secret = connect_jwt("wrong", CLIENT_KEY, "POST", path, Some("a=1"), now, 180);
        assert_eq!(
            check(&wrong_secret, "a=1", now),
            Err(AuthError::BadSignature)
        );
        // Other algorithms, however signed, and `none`.
        let claims = serde_json::json!({
            "iss": CLIENT_KEY, "iat": now, "exp": now + 180,
            "qsh": query_string_hash("POST", path, Some("a=1")),
        });
        for alg in ["HS512", "RS256", "HS384"] {
            let token = forged(
                SECRET,
                &serde_json::json!({"alg": alg, "typ": "JWT"}),
                &claims,
            );
            assert_eq!(
                check(&token, "a=1", now),
                Err(AuthError::JwtAlgorithm),
                "{alg}"
            );
        }
        let none = forged(SECRET, &serde_json::json!({"alg": "none"}), &claims);
        let (unsigned, _) = none.rsplit_once('.').expect("token");
        assert!(check(&format!("{unsigned}."), "a=1", now).is_err());
        // The forger's tool makes valid HS256 tokens (the cases above fail for what they claim).
        let genuine = forged(SECRET, &serde_json::json!({"alg": "HS256"}), &claims);
        assert_eq!(check(&genuine, "a=1", now), Ok(Scheme::ConnectJwt));
        // Claims altered after signing.
        let (header_part, rest) = genuine.split_once('.').expect("token");
        let (_, signature) = rest.split_once('.').expect("token");
        let altered = forged(
            SECRET,
            &serde_json::json!({"alg": "HS256"}),
            &serde_json::json!({"iss": CLIENT_KEY, "iat": now, "exp": now + 9000, "qsh": "x"}),
        );
        let (_, altered_rest) = altered.split_once('.').expect("token");
        let (altered_claims, _) = altered_rest.split_once('.').expect("token");
        let spliced = format!("{header_part}.{altered_claims}.{signature}");
        assert_eq!(check(&spliced, "a=1", now), Err(AuthError::BadSignature));
        assert_eq!(
            check("not-a-token", "a=1", now),
            Err(AuthError::MalformedJwt)
        );
    }

    #[test]
    fn automation_tokens_compare_whole() {
        let mut headers = HeaderMap::new();
        let check = |headers: &HeaderMap| {
            authenticate(&request(headers, None, b"{}"), Some(SECRET), 0, &NO_JWT)
        };
        assert_eq!(check(&headers), Err(AuthError::Missing));
        headers.insert(AUTOMATION_TOKEN_HEADER, HeaderValue::from_static(SECRET));
        assert_eq!(check(&headers), Ok(Scheme::AutomationToken));
        for wrong in ["s3cr3t", "s3cr3t-shared ", "S3CR3T-SHARED", ""] {
            headers.insert(
                AUTOMATION_TOKEN_HEADER,
                HeaderValue::from_str(wrong).expect("header"),
            );
            assert_eq!(check(&headers), Err(AuthError::BadToken), "{wrong:?}");
        }
    }
}
