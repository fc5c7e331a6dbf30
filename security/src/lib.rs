//! Security for every part: TLS with rustls (certificates reloaded when their files
//! change), the identity a client certificate carries, bearer tokens (JWT, HS256),
//! the access policy (roles and the skills an agent may offer), and the throwaway
//! certificates of `paygrid dev`. Decisions and the threat model: docs/security.md.

pub mod certs;
pub mod client;
pub mod identity;
pub mod net;
pub mod policy;
pub mod tls;
pub mod token;

pub use client::ClientSecurity;
pub use net::{AuthChannel, Bearer, Connector, PeerInfo};
pub use policy::{Policy, Role};
pub use tls::{ClientAuth, Tls, TlsError};
