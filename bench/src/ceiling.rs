//! The raw gRPC ceiling: a ping-pong echo server (`paygrid bench-echo`) and a client that
//! measures round trips per second over one bidirectional stream, with messages the size
//! of an assignment and of a result.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::proto as pb;

/// The echo server of the ceiling measurement (`paygrid bench-echo`).
pub struct Echo;

#[tonic::async_trait]
impl pb::bench_server::Bench for Echo {
    type PingPongStream = Pin<Box<dyn Stream<Item = Result<pb::Pong, tonic::Status>> + Send>>;

    async fn ping_pong(
        &self,
        request: tonic::Request<tonic::Streaming<pb::Ping>>,
    ) -> Result<tonic::Response<Self::PingPongStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            while let Ok(Some(ping)) = inbound.message().await {
                let pong = pb::Pong {
                    id: ping.id,
                    payload: vec![7u8; ping.reply_bytes as usize].into(),
                };
                if sender.send(Ok(pong)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            receiver,
        ))))
    }
}

/// Serves the echo until `shutdown` resolves.
pub async fn echo_server(
    listen: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "paygrid bench-echo listening on http://{}",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .add_service(pb::bench_server::BenchServer::new(Echo))
        .serve_with_incoming_shutdown(paygrid_control_unit::server::no_delay(listener), shutdown)
        .await?;
    Ok(())
}

/// Round trips per second over one bidirectional stream with `window` in flight.
pub async fn ceiling(
    url: &str,
    assignment_bytes: usize,
    result_bytes: usize,
    window: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let channel = Channel::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = pb::bench_client::BenchClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(window * 2);
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let payload: bytes::Bytes = vec![1u8; assignment_bytes].into();
    let mut inbound = client
        .ping_pong(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let stop = Instant::now() + duration;
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let (credits, sent) = (credits.clone(), sent.clone());
        tokio::spawn(async move {
            while Instant::now() < stop {
                let Ok(permit) = credits.clone().acquire_owned().await else {
                    return;
                };
                permit.forget();
                let id = sent.fetch_add(1, Ordering::Relaxed);
                if sender
                    .send(pb::Ping {
                        id,
                        payload: payload.clone(),
                        reply_bytes: result_bytes as u32,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let mut received = 0u64;
    while Instant::now() < stop {
        match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(_))) => {
                received += 1;
                credits.add_permits(1);
            }
            _ => break,
        }
    }
    producer.abort();
    Ok(received as f64 / started.elapsed().as_secs_f64())
}
