//! Connections, plaintext or TLS, for both sides: the accepted connections a server
//! serves (with the caller's certificate identity), the connector clients dial with
//! (gRPC channels and HTTP clients alike), and an HTTP/1 server for axum routers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Who is on the other end of an accepted connection: its address, and the common name
/// of its client certificate (verified against the CA in the handshake) when it gave one.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    pub identity: Option<Arc<str>>,
}

/// A connection, plaintext or TLS.
pub enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// An accepted connection.
pub type ServerConn = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
/// A dialled connection.
pub type ClientConn = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

macro_rules! delegate {
    ($self:ident, $inner:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($inner) => $call,
            Stream::Tls($inner) => $call,
        }
    };
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl ServerConn {
    pub fn peer(&self) -> PeerInfo {
        match self {
            Stream::Plain(tcp) => PeerInfo {
                addr: tcp.peer_addr().ok(),
                identity: None,
            },
            Stream::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                PeerInfo {
                    addr: tcp.peer_addr().ok(),
                    identity: session
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| crate::identity::common_name(cert))
                        .map(Arc::from),
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer()
    }
}

/// Connections accepted on `listener` with `TCP_NODELAY` (task frames are small and
/// latency-bound), after their TLS handshake when `tls` is given. Handshakes run in their
/// own tasks (a slow client does not hold up the others) and time out after 10 s; at
/// most 256 wait to be served.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if sender.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            match &acceptor {
                None => {
                    if sender.send(Ok(Stream::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, sender) = (acceptor.clone(), sender.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => {
                                let _ = sender.send(Ok(Stream::Tls(Box::new(tls)))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::info!(%addr, %error, "TLS handshake refused")
                            }
                            Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Dials `host:port` of a URI, over TLS when configured (`https://` URIs need it). For
/// tonic (`Endpoint::connect_with_connector`) and hyper's client alike.
#[derive(Clone, Default)]
pub struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    pub fn new(tls: Option<Arc<ClientConfig>>) -> Self {
        Self {
            tls: tls.map(tokio_rustls::TlsConnector::from),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http://` or `https://`, as this connector dials.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    pub async fn dial(&self, uri: &http::Uri) -> std::io::Result<ClientConn> {
        let invalid = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"))
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{uri}: connect timed out after 5 s"),
                )
            })??;
        let _ = tcp.set_nodelay(true);
        // With TLS configured every connection is TLS, whatever the scheme says: a
        // plaintext `http://` left in a configuration never sends anything in the clear.
        match (&self.tls, https) {
            (Some(tls), _) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| invalid("not a host name or address"))?;
                Ok(Stream::Tls(Box::new(tls.connect(name, tcp).await?)))
            }
            (None, true) => Err(invalid(
                "https needs the CA to trust: give --certs-dir (or use http:// with --insecure)",
            )),
            (None, false) => Ok(Stream::Plain(tcp)),
        }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.dial(&uri).await.map(TokioIo::new) })
    }
}

impl hyper_util::client::legacy::connect::Connection for ClientConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Adds `authorization: Bearer TOKEN` to every call, when a token is set.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// `token` is the bare token, or a whole `Bearer TOKEN` header value.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Self(None)),
            Some(token) => {
                let value = if token.starts_with("Bearer ") {
                    token.to_owned()
                } else {
                    format!("Bearer {token}")
                };
                value
                    .parse()
                    .map(|v| Self(Some(v)))
                    .map_err(|_| "the token has characters a header cannot carry".to_owned())
            }
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC channel through `connector`.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Serves an axum router over HTTP/1.1 on `listener`, over TLS when `tls` is given,
/// until `shutdown` resolves. Each request carries the caller's [`PeerInfo`] as an
/// extension.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    use tokio_stream::StreamExt;
    let mut connections = incoming(listener, tls);
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            () = &mut shutdown => return,
            conn = connections.next() => match conn {
                Some(Ok(conn)) => conn,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let peer = conn.peer();
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    let mut router = router.clone();
                    async move {
                        use tower_service::Service;
                        router.call(request.map(axum::body::Body::new)).await
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .with_upgrades()
                .await;
        });
    }
}
