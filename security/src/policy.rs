//! Who may do what: roles for operators and clients, and the skills each agent identity
//! may offer. The policy is a YAML file (`--access`); without one, every certificate the
//! CA signed is trusted fully (a small deployment where holding a certificate is the
//! permission), which the control unit says at start.
//!
//! ```yaml
//! identities:
//!   root: { role: admin }
//!   exec-payments:
//!     role: operator          # its remediation agent submits workflows
//!     skills: ["gateway.*", "ledger.*"]
//!   exec-risk: { skills: ["risk.*"] }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::net::PeerInfo;
use crate::token::{TokenError, TokenKey};

/// Each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads workflows, agents, health, limits, specs, reconciliation.
    Viewer,
    /// Submits, cancels, approves, changes limits, calls tools, starts reconciliation.
    Operator,
    /// Reads the audit log; everything else.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role `{other}`: viewer, operator or admin")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub role: Option<Role>,
    /// Skill patterns this identity may offer as an agent: `gateway.*`, `risk.score`, `*`.
    #[serde(default)]
    pub skills: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    identities: BTreeMap<String, Grant>,
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Certificate,
    Token,
    /// Plaintext serving (`--insecure`): nobody proved anything.
    None,
}

/// An authenticated caller: its name, what it may do, and where it called from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
    pub proof: Proof,
    pub role: Option<Role>,
    /// Skill patterns it may offer as an agent.
    pub skills: Arc<[String]>,
    pub from: Option<std::net::SocketAddr>,
}

impl Caller {
    pub fn may(&self, needed: Role) -> bool {
        self.role.is_some_and(|role| role >= needed)
    }

    /// Whether this caller may offer `skill` as an agent.
    pub fn may_offer(&self, skill: &str) -> bool {
        self.skills
            .iter()
            .any(|pattern| skill_matches(pattern, skill))
    }

    /// `alice (token)`, `exec-payments (certificate)`: for messages and the audit log.
    pub fn describe(&self) -> String {
        match self.proof {
            Proof::Certificate => format!("{} (certificate)", self.name),
            Proof::Token => format!("{} (token)", self.name),
            Proof::None => format!("{} (unauthenticated, --insecure)", self.name),
        }
    }
}

/// `gateway.*` matches `gateway.capture`; `*` matches everything; otherwise exact.
pub fn skill_matches(pattern: &str, skill: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => skill.starts_with(prefix),
        None => pattern == skill,
    }
}

/// Why a caller is not let in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "no credentials: present a client certificate signed by the Paygrid CA or an `authorization: Bearer TOKEN` header (paygrid token)"
    )]
    Missing,
    #[error("bearer token refused: {0}")]
    Token(#[from] TokenError),
    #[error("bearer tokens are not accepted here: the control unit has no --token-key")]
    NoTokenKey,
    #[error("the authorization header is not `Bearer TOKEN`")]
    Header,
}

/// Role and skill patterns by identity, as the policy file gives them.
type Grants = BTreeMap<String, (Option<Role>, Arc<[String]>)>;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Role and skill patterns by identity; `None`: every certificate from the CA is an
    /// admin that may offer any skill. Shared with every caller, not copied per call.
    identities: Option<Grants>,
    tokens: Option<TokenKey>,
    /// Plaintext serving: callers without credentials are let in as admins.
    insecure: bool,
    /// `["*"]`, and nothing: the skills of a fully trusted caller and of a token holder.
    any_skill: Arc<[String]>,
    no_skill: Arc<[String]>,
}

impl Policy {
    fn new(identities: Option<Grants>, tokens: Option<TokenKey>, insecure: bool) -> Self {
        Self {
            identities,
            tokens,
            insecure,
            any_skill: Arc::new(["*".to_owned()]),
            no_skill: Arc::new([]),
        }
    }

    /// Every CA certificate trusted fully; tokens verified with `tokens`, when given.
    pub fn trust_ca(tokens: Option<TokenKey>) -> Self {
        Self::new(None, tokens, false)
    }

    /// No authentication (plaintext on loopback): everyone is an admin, tokens still
    /// name the caller when given.
    pub fn insecure(tokens: Option<TokenKey>) -> Self {
        Self::new(None, tokens, true)
    }

    pub fn parse(text: &str, tokens: Option<TokenKey>) -> Result<Self, String> {
        let file: PolicyFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        for (name, grant) in &file.identities {
            if grant.role.is_none() && grant.skills.is_empty() {
                return Err(format!(
                    "identity `{name}` has neither a role nor skills: give it one or remove it"
                ));
            }
        }
        let identities = file
            .identities
            .into_iter()
            .map(|(name, grant)| (name, (grant.role, grant.skills.into())))
            .collect();
        Ok(Self::new(Some(identities), tokens, false))
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Who is calling: a bearer token wins over the connection's certificate (a client
    /// acting for someone, as the MCP endpoint does, forwards their token).
    pub fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        authorization: Option<&str>,
        now_secs: u64,
    ) -> Result<Caller, AuthError> {
        let from = peer.and_then(|p| p.addr);
        if let Some(header) = authorization {
            let token = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .ok_or(AuthError::Header)?
                .trim();
            let key = self.tokens.as_ref().ok_or(AuthError::NoTokenKey)?;
            let claims = key.verify(token, now_secs)?;
            return Ok(Caller {
                name: claims.sub.into(),
                proof: Proof::Token,
                role: Some(claims.role),
                skills: self.no_skill.clone(),
                from,
            });
        }
        if let Some(name) = peer.and_then(|p| p.identity.clone()) {
            let (role, skills) = match &self.identities {
                None => (Some(Role::Admin), self.any_skill.clone()),
                Some(identities) => match identities.get(&*name) {
                    Some((role, skills)) => (*role, skills.clone()),
                    None => (None, self.no_skill.clone()),
                },
            };
            return Ok(Caller {
                name,
                proof: Proof::Certificate,
                role,
                skills,
                from,
            });
        }
        if self.insecure {
            return Ok(Caller {
                name: "anonymous".into(),
                proof: Proof::None,
                role: Some(Role::Admin),
                skills: self.any_skill.clone(),
                from,
            });
        }
        Err(AuthError::Missing)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer(name: &str) -> PeerInfo {
        PeerInfo {
            addr: None,
            identity: Some(name.into()),
        }
    }

    #[test]
    fn a_policy_grants_roles_and_skills_by_certificate_name() {
        let policy = Policy::parse(
            "identities:\n  root: { role: admin }\n  exec-payments:\n    role: operator\n    skills: [\"gateway.*\"]\n",
            None,
        )
        .unwrap();
        let exec = policy
            .authenticate(Some(&peer("exec-payments")), None, 0)
            .unwrap();
        assert!(exec.may_offer("gateway.capture") && !exec.may_offer("risk.score"));
        assert!(exec.may(Role::Operator) && !exec.may(Role::Admin));
        let stranger = policy
            .authenticate(Some(&peer("stranger")), None, 0)
            .unwrap();
        assert!(!stranger.may(Role::Viewer) && !stranger.may_offer("gateway.capture"));
        assert_eq!(
            policy.authenticate(None, None, 0).unwrap_err(),
            AuthError::Missing
        );
        assert!(Policy::parse("identities:\n  x: {}\n", None).is_err());
        assert!(Policy::parse("identities:\n  x: { role: root }\n", None).is_err());
    }

    #[test]
    fn a_token_names_the_caller_and_its_role() {
        let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
        let policy = Policy::trust_ca(Some(key.clone()));
        let token = format!("Bearer {}", key.mint("alice", Role::Viewer, 100, 60));
        let caller = policy
            .authenticate(Some(&peer("node")), Some(&token), 110)
            .unwrap();
        assert_eq!((&*caller.name, caller.proof), ("alice", Proof::Token));
        assert!(caller.may(Role::Viewer) && !caller.may(Role::Operator));
        assert!(matches!(
            policy.authenticate(None, Some(&token), 200),
            Err(AuthError::Token(TokenError::Expired { .. }))
        ));
        assert_eq!(
            Policy::trust_ca(None)
                .authenticate(None, Some(&token), 110)
                .unwrap_err(),
            AuthError::NoTokenKey
        );
    }
}
