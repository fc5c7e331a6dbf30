//! How a part or a client reaches others: the connector (TLS with the CA, and a client
//! certificate when it has one) and the bearer token it sends, if any.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::net::{AuthChannel, Bearer, Connector};
use crate::tls::{Tls, TlsError};

#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    pub connector: Connector,
    pub bearer: Bearer,
}

/// ALPN for gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the HTTP/1.1 listeners (gateways, metrics, MCP).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

impl ClientSecurity {
    /// Plaintext, no credentials (`--insecure`).
    pub fn insecure() -> Self {
        Self::default()
    }

    /// TLS trusting the CA in `tls`, presenting the client certificate `cert_name` when
    /// given, sending `token` when given. `alpn`: [`ALPN_H2`] for gRPC, [`ALPN_HTTP1`]
    /// for HTTP.
    pub fn tls(
        tls: &Tls,
        cert_name: Option<&str>,
        token: Option<&str>,
        alpn: &[u8],
    ) -> Result<Self, TlsError> {
        Ok(Self {
            connector: Connector::new(Some(tls.client(cert_name, &[alpn])?)),
            bearer: Bearer::new(token).map_err(TlsError::Config)?,
        })
    }

    pub fn with_bearer(&self, bearer: Bearer) -> Self {
        Self {
            connector: self.connector.clone(),
            bearer,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.connector.is_tls()
    }

    /// `https://ADDR` or `http://ADDR`, as this client dials.
    pub fn url(&self, addr: impl std::fmt::Display) -> String {
        format!("{}://{addr}", self.connector.scheme())
    }

    /// An endpoint for `url` with the settings every Paygrid client uses.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5)))
    }

    /// A channel through this client's connector (no token: for parts that authenticate
    /// with their certificate).
    pub async fn channel(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(self.connector.clone())
            .await
    }

    pub fn channel_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector.clone())
    }

    /// A channel that sends this client's token with every call.
    pub async fn auth_channel(
        &self,
        endpoint: Endpoint,
    ) -> Result<AuthChannel, tonic::transport::Error> {
        Ok(self.authorize(self.channel(endpoint).await?))
    }

    pub fn authorize(&self, channel: Channel) -> AuthChannel {
        tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone())
    }
}

/// Shared, for clients cloned into many tasks.
pub type SharedClientSecurity = Arc<ClientSecurity>;
