//! How this process reaches the other parts, and how its servers are secured: set once
//! from the global flags (`--certs-dir`, `--cert-name`, `--token`, `--insecure`).
//! docs/security.md says what each part presents and checks.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use paygrid_security::client::{ALPN_H2, ALPN_HTTP1};
use paygrid_security::{ClientAuth, ClientSecurity, Tls};

use crate::operator::UsageError;

#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// `None`: plaintext (`--insecure`, or a client given no certificates directory).
    pub tls: Option<Tls>,
    /// The client certificate to present (`--cert-name`).
    pub cert_name: Option<String>,
    pub token: Option<String>,
    /// `--insecure` was given: servers may serve plaintext.
    pub insecure: bool,
}

static TRANSPORT: OnceLock<Transport> = OnceLock::new();

pub fn init(
    certs_dir: Option<PathBuf>,
    cert_name: Option<String>,
    token: Option<String>,
    insecure: bool,
) -> anyhow::Result<()> {
    if insecure && certs_dir.is_some() {
        anyhow::bail!(UsageError(
            "--insecure and --certs-dir contradict each other: choose one".into()
        ));
    }
    let tls = certs_dir.map(Tls::new);
    if let Some(tls) = &tls
        && !tls.ca_path().exists()
    {
        anyhow::bail!(UsageError(format!(
            "--certs-dir {}: no ca.crt in it (create one with `paygrid certs create --dir {}`)",
            tls.dir().display(),
            tls.dir().display()
        )));
    }
    let _ = TRANSPORT.set(Transport {
        tls,
        cert_name,
        token,
        insecure,
    });
    Ok(())
}

pub fn get() -> &'static Transport {
    TRANSPORT.get_or_init(Transport::default)
}

impl Transport {
    /// The client certificate this process presents: `--cert-name`, else `default`
    /// when its files exist.
    fn cert_for(&self, default: Option<&str>) -> Option<String> {
        let tls = self.tls.as_ref()?;
        self.cert_name.clone().or_else(|| {
            default
                .filter(|name| tls.has_client(name))
                .map(str::to_owned)
        })
    }

    fn client(&self, default_cert: Option<&str>, alpn: &[u8]) -> anyhow::Result<ClientSecurity> {
        match &self.tls {
            None => Ok(ClientSecurity {
                bearer: paygrid_security::Bearer::new(self.token.as_deref()).map_err(UsageError)?,
                ..ClientSecurity::insecure()
            }),
            Some(tls) => {
                let cert = self.cert_for(default_cert);
                Ok(
                    ClientSecurity::tls(tls, cert.as_deref(), self.token.as_deref(), alpn)
                        .map_err(|e| UsageError(e.to_string()))?,
                )
            }
        }
    }

    /// An operator client (CLI, MCP over stdio): `client.root` when present, the token
    /// when given.
    pub fn operator(&self) -> anyhow::Result<ClientSecurity> {
        self.client(Some("root"), ALPN_H2)
    }

    /// An operator's HTTP client (a gateway's admin endpoints).
    pub fn operator_http(&self) -> anyhow::Result<ClientSecurity> {
        self.client(Some("root"), ALPN_HTTP1)
    }

    /// A part's gRPC client presenting `client.NAME` (an execution unit's identity).
    pub fn part_grpc(&self, name: &str) -> anyhow::Result<ClientSecurity> {
        self.client(Some(name), ALPN_H2)
    }

    /// A cluster member's client to the other members (forwarding calls): the node
    /// certificate, which the others believe about the caller it forwards.
    pub fn member(&self) -> anyhow::Result<ClientSecurity> {
        match &self.tls {
            None => Ok(ClientSecurity::insecure()),
            Some(tls) => Ok(ClientSecurity::tls(
                tls,
                Some(paygrid_security::policy::NODE_IDENTITY),
                None,
                ALPN_H2,
            )
            .map_err(|e| UsageError(e.to_string()))?),
        }
    }

    /// A part's HTTP client (to gateways) presenting `client.NAME`.
    pub fn part_http(&self, name: &str) -> anyhow::Result<ClientSecurity> {
        self.client(Some(name), ALPN_HTTP1)
    }

    /// A server's TLS: `None` for plaintext, which needs `--insecure`.
    pub fn server(
        &self,
        part: &str,
        auth: ClientAuth,
        alpn: &[u8],
    ) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        match &self.tls {
            Some(tls) => Ok(Some(
                tls.server(auth, &[alpn])
                    .with_context(|| format!("TLS for {part}"))?,
            )),
            None if self.insecure => {
                tracing::warn!(
                    "{part} serves PLAINTEXT without authentication (--insecure): anyone who reaches it can register agents and move money; use it on loopback only"
                );
                Ok(None)
            }
            None => anyhow::bail!(UsageError(format!(
                "{part} needs TLS: give --certs-dir DIR (ca.crt, node.crt, node.key; `paygrid certs create --dir DIR` makes a development set), or --insecure for plaintext on loopback"
            ))),
        }
    }

    /// `https://` or `http://`, as this process's servers speak.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// One HTTP request to a part's HTTP listener (gateways' admin endpoints): status and
/// body.
pub async fn http_request(
    security: &ClientSecurity,
    method: http::Method,
    url: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<bytes::Bytes>>(security.connector.clone());
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("request to {url}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
