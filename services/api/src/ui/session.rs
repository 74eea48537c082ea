//! Browser sessions: the api key is exchanged once for a signed, expiring session cookie
//! (HttpOnly, SameSite=Strict), and each session has a CSRF token derived from it.
//!
//! Sessions are stateless (an HMAC over the expiry and a random id, keyed by the api key's
//! digest), so every api replica accepts them and a new api key ends them all. Signing out
//! revokes the session in this replica until it expires, and clears the cookie.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "pagestream_session";
/// How long a session lasts, in seconds.
pub const LIFETIME_SECS: i64 = 12 * 3600;

type HmacSha256 = Hmac<Sha256>;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    id: String,
    expires: i64,
    /// The token every state-changing form of this session carries.
    pub csrf: String,
}

pub struct Sessions {
    key: [u8; 32],
    /// Signed-out session ids, with their expiry (dropped once expired).
    revoked: Mutex<HashMap<String, i64>>,
}

impl Sessions {
    pub fn new(api_key_digest: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"pagestream ui session v1\0");
        hasher.update(api_key_digest);
        Self {
            key: hasher.finalize().into(),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, purpose: &str, data: &str) -> HmacSha256 {
        // An HMAC takes a key of any length.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("hmac accepts any key length"),
        };
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        mac
    }

    fn session(&self, id: String, expires: i64) -> Session {
        let csrf = hex::encode(self.mac("csrf", &id).finalize().into_bytes());
        Session { id, expires, csrf }
    }

    /// A new session and its cookie value.
    pub fn issue(&self) -> (Session, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let expires = Utc::now().timestamp() + LIFETIME_SECS;
        let payload = format!("{expires}.{id}");
        let mac = hex::encode(self.mac("session", &payload).finalize().into_bytes());
        (self.session(id, expires), format!("{payload}.{mac}"))
    }

    /// The session a cookie value stands for, if it is genuine, current and not signed out.
    pub fn verify(&self, cookie: &str) -> Option<Session> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        let mac = hex::decode(mac).ok()?;
        self.mac("session", payload).verify_slice(&mac).ok()?;
        let (expires, id) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= Utc::now().timestamp() {
            return None;
        }
        if let Ok(revoked) = self.revoked.lock()
            && revoked.contains_key(id)
        {
            return None;
        }
        Some(self.session(id.to_owned(), expires))
    }

    /// Whether a form's token is this session's (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        hex::decode(token)
            .ok()
            .is_some_and(|token| self.mac("csrf", &session.id).verify_slice(&token).is_ok())
    }

    pub fn revoke(&self, session: &Session) {
        if let Ok(mut revoked) = self.revoked.lock() {
            let now = Utc::now().timestamp();
            revoked.retain(|_, expires| *expires > now);
            revoked.insert(session.id.clone(), session.expires);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_signed_and_revocable() {
        let sessions = Sessions::new(&[7; 32]);
        let (session, cookie) = sessions.issue();
        let verified = sessions.verify(&cookie).expect("genuine cookie");
        assert_eq!(verified.csrf, session.csrf);
        assert!(sessions.csrf_matches(&verified, &session.csrf));
        assert!(!sessions.csrf_matches(&verified, "00"));
        assert!(!sessions.csrf_matches(&verified, "not hex"));

        // Another key (another api key) does not accept it; a tampered expiry breaks the MAC.
        assert!(Sessions::new(&[8; 32]).verify(&cookie).is_none());
        let (expires, rest) = cookie.split_once('.').expect("payload");
        let later: i64 = expires.parse::<i64>().expect("expiry") + 3600;
        assert!(sessions.verify(&format!("{later}.{rest}")).is_none());
        assert!(sessions.verify("garbage").is_none());

        sessions.revoke(&verified);
        assert!(sessions.verify(&cookie).is_none());
    }
}
