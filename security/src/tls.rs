//! rustls configurations from a certificates directory, laid out as CockroachDB's:
//! `ca.crt` (the CA every part trusts), `node.crt`/`node.key` (what servers present),
//! `client.NAME.crt`/`client.NAME.key` (what a client named NAME presents).
//!
//! Certificates and keys are re-read when their files change (checked every two
//! seconds): new handshakes use the new ones, sessions already open keep theirs. A new
//! CA needs a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate from the CA is refused in the handshake.
    Required,
    /// A certificate is verified when given; without one the caller needs a token.
    Optional,
}

/// A certificates directory, and the configurations made from it.
#[derive(Debug, Clone)]
pub struct Tls {
    dir: PathBuf,
}

impl Tls {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The certificate and key servers present.
    pub fn node_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("node.crt"), self.dir.join("node.key"))
    }

    /// The certificate and key a client named `name` presents.
    pub fn client_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("client.{name}.crt")),
            self.dir.join(format!("client.{name}.key")),
        )
    }

    /// Whether `client.NAME.crt` exists.
    pub fn has_client(&self, name: &str) -> bool {
        self.client_paths(name).0.exists()
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let path = self.ca_path();
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&path)? {
            roots.add(cert).map_err(|e| file_error(&path, e))?;
        }
        Ok(roots)
    }

    /// A server presenting `node.crt`, verifying client certificates against `ca.crt`,
    /// speaking the ALPN protocols given (`h2` for gRPC, `http/1.1` for HTTP).
    pub fn server(&self, auth: ClientAuth, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let (cert, key) = self.node_paths();
        let resolver = Reloading::load(cert, key)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider());
        let verifier = match auth {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client trusting `ca.crt`, presenting `client.NAME.crt` when `name` is given
    /// (`node` presents the node certificate).
    pub fn client(
        &self,
        name: Option<&str>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?);
        let mut config = match name {
            Some(name) => {
                let (cert, key) = if name == "node" {
                    self.node_paths()
                } else {
                    self.client_paths(name)
                };
                builder.with_client_cert_resolver(Reloading::load(cert, key)?)
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate and key read from files, re-read when either file changes.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>, Option<SystemTime>)>,
}

impl Reloading {
    fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let loaded = certified(&cert, &key)?;
        let stamps = (modified(&cert), modified(&key));
        let this = Arc::new(Self {
            cert,
            key,
            current: RwLock::new((loaded, stamps.0, stamps.1)),
        });
        // Polls while anyone still uses it (and a runtime is there to poll on).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&this);
            runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(2));
                every.tick().await;
                loop {
                    every.tick().await;
                    let Some(this) = weak.upgrade() else { return };
                    this.reload_if_changed();
                }
            });
        }
        Ok(this)
    }

    /// Re-reads the files when their modification times changed; keeps the old pair
    /// (and says why) when the new one does not load.
    fn reload_if_changed(&self) -> bool {
        let stamps = (modified(&self.cert), modified(&self.key));
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if (current.1, current.2) == stamps {
                return false;
            }
        }
        match certified(&self.cert, &self.key) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    (loaded, stamps.0, stamps.1);
                tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "certificate changed but does not load; keeping the previous one");
                false
            }
        }
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }
}

fn certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(key, e))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(Arc::new(certified))
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Sets a file's modification time `secs` into the future, so a change is seen
    /// whatever the file system's timestamp granularity.
    fn touch(path: &Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    }

    #[tokio::test]
    async fn a_changed_certificate_is_used_for_new_handshakes() {
        let dir = std::env::temp_dir().join(format!("paygrid-tls-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::certs::create(&dir, &["one"]).unwrap();
        let reloading =
            Reloading::load(dir.join("client.one.crt"), dir.join("client.one.key")).unwrap();
        let before = reloading.get().cert[0].clone();
        assert!(!reloading.reload_if_changed());
        // Another certificate under the same file names, written later.
        let other = dir.join("other");
        crate::certs::create(&other, &["one"]).unwrap();
        std::fs::copy(other.join("client.one.crt"), dir.join("client.one.crt")).unwrap();
        std::fs::copy(other.join("client.one.key"), dir.join("client.one.key")).unwrap();
        touch(&dir.join("client.one.crt"), 10);
        assert!(reloading.reload_if_changed());
        assert_ne!(reloading.get().cert[0], before);
        // A broken file keeps the previous pair.
        std::fs::write(dir.join("client.one.key"), "not a key").unwrap();
        touch(&dir.join("client.one.key"), 20);
        assert!(!reloading.reload_if_changed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
