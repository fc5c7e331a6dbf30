//! Bearer tokens: JWTs signed with HMAC-SHA256 by a key the control unit reads from a
//! file (`--token-key`). `paygrid token` mints them. The claims are the subject (who),
//! the role, the issue and expiry times, and the issuer `paygrid`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::policy::Role;

pub const ISSUER: &str = "paygrid";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a JWT (three base64url parts separated by dots)")]
    Malformed,
    #[error("the token is signed with `{0}`; only HS256 is accepted")]
    Algorithm(String),
    #[error("the token's signature does not verify: it was altered or signed with another key")]
    Signature,
    #[error("the token expired at {exp} (unix seconds); ask for a new one")]
    Expired { exp: u64 },
    #[error("the token's claims do not parse: {0}")]
    Claims(String),
    #[error("the token was issued by `{0}`, not `paygrid`")]
    Issuer(String),
}

/// The key tokens are signed and verified with.
#[derive(Clone)]
pub struct TokenKey(ring::hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: the key must be at least 32 bytes")]
    Short(String),
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// Reads a key file (its bytes, surrounding whitespace trimmed; at least 32).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let text = bytes.trim_ascii();
        if text.len() < 32 {
            return Err(KeyError::Short(path.display().to_string()));
        }
        Ok(Self::new(text))
    }

    /// Writes a new random key (64 hex digits, mode 0600) to `path`.
    pub fn generate(path: &Path) -> Result<Self, KeyError> {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| KeyError::Short("the system random source".into()))?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(path, &hex).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Self::new(hex.as_bytes()))
    }

    /// A signed token for `subject` with `role`, valid for `ttl_secs` from `now`.
    pub fn mint(&self, subject: &str, role: Role, now: u64, ttl_secs: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            iat: now,
            exp: now.saturating_add(ttl_secs),
            iss: ISSUER.to_owned(),
        };
        let body = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let signature = ring::hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The claims of a token this key signed that has not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: serde_json::Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        let algorithm = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
        if algorithm != "HS256" {
            return Err(TokenError::Algorithm(algorithm.to_owned()));
        }
        let signed_len = token.len() - signature.len() - 1;
        ring::hmac::verify(
            &self.0,
            &token.as_bytes()[..signed_len],
            &decode(signature)?,
        )
        .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(body)?)
            .map_err(|e| TokenError::Claims(e.to_string()))?;
        if claims.iss != ISSUER {
            return Err(TokenError::Issuer(claims.iss));
        }
        if claims.exp <= now {
            return Err(TokenError::Expired { exp: claims.exp });
        }
        Ok(claims)
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let token = key().mint("alice", Role::Operator, 1_000, 60);
        let claims = key().verify(&token, 1_030).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.role),
            ("alice", Role::Operator)
        );
        assert_eq!(
            key().verify(&token, 1_060),
            Err(TokenError::Expired { exp: 1_060 })
        );
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let token = key().mint("bob", Role::Viewer, 1_000, 60);
        // The role raised in the body, signature kept.
        let parts: Vec<&str> = token.split('.').collect();
        let body = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let raised = URL_SAFE_NO_PAD.encode(body.replace("viewer", "admin"));
        let tampered = format!("{}.{raised}.{}", parts[0], parts[2]);
        assert_eq!(key().verify(&tampered, 1_001), Err(TokenError::Signature));
        let other = TokenKey::new(b"another key, also of 32 bytes or more");
        assert_eq!(other.verify(&token, 1_001), Err(TokenError::Signature));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            key().verify(&none, 1_001),
            Err(TokenError::Algorithm("none".into()))
        );
        assert_eq!(key().verify("abc", 1_001), Err(TokenError::Malformed));
    }
}
