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
    /// The cluster member that forwarded this call to the workflow's owner, having
    /// authenticated the caller at its door (docs/cluster.md).
    pub via: Option<Arc<str>>,
}

/// The name in the servers' certificate (`node.crt`): what control units present to each
/// other when one forwards a call to another.
pub const NODE_IDENTITY: &str = "node";

/// The header of a forwarded call: who the caller proved to be at the member it called,
/// and that member. Believed only from a peer presenting the node certificate.
pub const FORWARDED_FOR: &str = "x-paygrid-forwarded-for";

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
        let via = self
            .via
            .as_ref()
            .map(|member| format!(", via {member}"))
            .unwrap_or_default();
        match self.proof {
            Proof::Certificate => format!("{} (certificate{via})", self.name),
            Proof::Token => format!("{} (token{via})", self.name),
            Proof::None => format!("{} (unauthenticated, --insecure{via})", self.name),
        }
    }

    /// The [`FORWARDED_FOR`] value that carries this caller to another member:
    /// `proof.role.from.hex(name).hex(member)` (hex: names may hold any character).
    pub fn forwarded_header(&self, member: &str) -> String {
        let proof = match self.proof {
            Proof::Certificate => "certificate",
            Proof::Token => "token",
            Proof::None => "none",
        };
        let from = self.from.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "{proof}.{}.{}.{}.{}",
            self.role.map_or("none", Role::name),
            hex(from.as_bytes()),
            hex(self.name.as_bytes()),
            hex(member.as_bytes())
        )
    }

    /// The caller a member forwarded, when `self` (the direct peer) is a member (it
    /// presented the node certificate; or nobody proves anything, `--insecure`) and
    /// `header` is well formed; `None` otherwise.
    pub fn forwarded(&self, header: &str) -> Option<Caller> {
        let member = match self.proof {
            Proof::Certificate => &*self.name == NODE_IDENTITY,
            Proof::None => true,
            Proof::Token => false,
        };
        if !member {
            return None;
        }
        let mut parts = header.split('.');
        let proof = match parts.next()? {
            "certificate" => Proof::Certificate,
            "token" => Proof::Token,
            "none" => Proof::None,
            _ => return None,
        };
        let role = match parts.next()? {
            "none" => None,
            name => Some(name.parse::<Role>().ok()?),
        };
        let from = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let name = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let member = String::from_utf8(unhex(parts.next()?)?).ok()?;
        if parts.next().is_some() || name.is_empty() {
            return None;
        }
        Some(Caller {
            name: name.into(),
            proof,
            role,
            skills: Arc::new([]),
            from: from.parse().ok(),
            via: Some(member.into()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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
                via: None,
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
                via: None,
            });
        }
        if self.insecure {
            return Ok(Caller {
                name: "anonymous".into(),
                proof: Proof::None,
                role: Some(Role::Admin),
                skills: self.any_skill.clone(),
                from,
                via: None,
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

    #[test]
    fn a_forwarded_caller_is_believed_from_a_member_only() {
        let policy = Policy::trust_ca(None);
        let alice = Caller {
            name: "alice. o'hara".into(),
            proof: Proof::Token,
            role: Some(Role::Operator),
            skills: Arc::new([]),
            from: Some("10.0.0.7:4100".parse().unwrap()),
            via: None,
        };
        let header = alice.forwarded_header("cu-1");
        let member = policy
            .authenticate(Some(&peer(NODE_IDENTITY)), None, 0)
            .unwrap();
        let forwarded = member.forwarded(&header).unwrap();
        assert_eq!(&*forwarded.name, "alice. o'hara");
        assert_eq!(forwarded.proof, Proof::Token);
        assert_eq!(forwarded.role, Some(Role::Operator));
        assert_eq!(forwarded.from, alice.from);
        assert!(
            forwarded.skills.is_empty(),
            "a forwarded caller offers no skills"
        );
        assert_eq!(forwarded.describe(), "alice. o'hara (token, via cu-1)");
        // Anyone else claiming to forward is not believed.
        let mallory = policy
            .authenticate(Some(&peer("mallory")), None, 0)
            .unwrap();
        assert!(mallory.forwarded(&header).is_none());
        assert!(member.forwarded("token.admin.zz.61.61").is_none());
        assert!(member.forwarded("token.root..61.61").is_none());
    }
}
