//! The execution unit against a scripted AgentHub on loopback: what it reports about the
//! attempts it runs. The hub is a real tonic server; the unit is the real runtime.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paygrid_execution_unit::{
    Agent, AgentCard, ExecutionUnit, ExecutionUnitConfig, Role, SkillEffect, SkillSpec, Task,
    TaskOutcome,
};
use paygrid_proto::v1 as pb;
use pb::agent_hub_server::{AgentHub, AgentHubServer};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// One session as the hub sees it: the agent's frames, and where to send the hub's.
type Opened = (
    Streaming<pb::AgentMessage>,
    mpsc::Sender<Result<pb::ControlMessage, Status>>,
);

/// A hub that hands each session's two ends to the test.
struct Hub {
    sessions: mpsc::Sender<Opened>,
}

type Frames = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentHub for Hub {
    async fn register(
        &self,
        _request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(pb::RegisterResponse {
            agent_id: "agent-1".into(),
            session_token: "token".into(),
            heartbeat_interval_ms: 100,
            lease_ttl_ms: 10_000,
        }))
    }

    type SessionStream = Frames;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Frames>, Status> {
        let (frames, outbound) = mpsc::channel(16);
        self.sessions
            .send((request.into_inner(), frames))
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn drain_gateway(
        &self,
        _request: Request<pb::DrainGatewayRequest>,
    ) -> Result<Response<pb::DrainGatewayResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_tools(
        &self,
        _request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn call_tool(
        &self,
        _request: Request<pb::CallToolRequest>,
    ) -> Result<Response<pb::CallToolResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_limits(
        &self,
        _request: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::LimitsState>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn set_limits(
        &self,
        _request: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::LimitsState>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn pause_dispatch(
        &self,
        _request: Request<pb::DispatchHoldRequest>,
    ) -> Result<Response<pb::DispatchHolds>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn resume_dispatch(
        &self,
        _request: Request<pb::DispatchHoldRequest>,
    ) -> Result<Response<pb::DispatchHolds>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_members(
        &self,
        _request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// An agent whose attempts run until the test releases them, each by its number.
struct Gated {
    gates: Mutex<HashMap<u32, oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl Agent for Gated {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "gated".into(),
            role: Role::Worker,
            version: "1".into(),
            skills: vec![SkillSpec {
                name: "test.gated".into(),
                description: "waits for the test".into(),
                input_schema: serde_json::json!({"type": "object"}),
                output_schema: serde_json::json!({"type": "object"}),
                effect: SkillEffect::State,
            }],
            max_concurrency: 4,
            labels: BTreeMap::new(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let gate = self.gates.lock().unwrap().remove(&task.attempt);
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        TaskOutcome::Succeeded(serde_json::json!({"attempt": task.attempt}))
    }
}

fn assignment(attempt: u32) -> pb::Assignment {
    pb::Assignment {
        task: Some(pb::TaskRef {
            workflow_id: "wf-1".into(),
            task_index: 0,
            attempt,
        }),
        task_id: "charge".into(),
        skill: "test.gated".into(),
        input_json: bytes::Bytes::from_static(b"{}"),
        deadline_unix_ms: 0,
        idempotency_key: "wf-1:charge".into(),
        ..Default::default()
    }
}

/// Reads frames until one satisfies `pick`, with a bound so a broken unit fails the test.
async fn next_matching<T>(
    inbound: &mut Streaming<pb::AgentMessage>,
    mut pick: impl FnMut(&pb::AgentMessage) -> Option<T>,
) -> T {
    let read = async {
        loop {
            let frame = inbound.next().await.expect("session open").expect("frame");
            if let Some(found) = pick(&frame) {
                return found;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the expected frame within 20 s")
}

/// The scripted hub on loopback, a unit hosting `agent` connected to it, and the unit's
/// first session as the hub sees it.
struct Started {
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: Arc<paygrid_telemetry::metrics::Registry>,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    inbound: Streaming<pb::AgentMessage>,
    frames: mpsc::Sender<Result<pb::ControlMessage, Status>>,
}

async fn start(agent: Gated) -> Started {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sessions, mut opened) = mpsc::channel(4);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentHubServer::new(Hub { sessions }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let shutdown = CancellationToken::new();
    let config = ExecutionUnitConfig::new("exec-test", format!("http://{address}"));
    let metrics = config.metrics.clone();
    let unit = ExecutionUnit::new(config).host(Arc::new(agent));
    let running = tokio::spawn(unit.run(shutdown.clone()));
    let (inbound, frames) = opened.recv().await.expect("a session");
    Started {
        server,
        metrics,
        shutdown,
        running,
        inbound,
        frames,
    }
}

fn running_attempts(frame: &pb::AgentMessage) -> Vec<u32> {
    let mut attempts: Vec<u32> = frame.running.iter().map(|r| r.attempt).collect();
    attempts.sort_unstable();
    attempts
}

/// Two attempts of one task on one agent (the control unit lost the agent, retried, and
/// the agent came back with the first still running): each is tracked on its own, so
/// the first one's result does not erase the second from the running list, and both
/// results name their attempt.
#[tokio::test(flavor = "multi_thread")]
async fn two_attempts_of_one_task_are_tracked_apart() {
    let (release_first, first) = oneshot::channel();
    let (release_second, second) = oneshot::channel();
    let agent = Gated {
        gates: Mutex::new(HashMap::from([(1, first), (2, second)])),
    };
    let Started {
        server,
        metrics,
        shutdown,
        running,
        mut inbound,
        frames,
    } = start(agent).await;
    frames
        .send(Ok(pb::ControlMessage {
            assignments: vec![assignment(1), assignment(2)],
            ..Default::default()
        }))
        .await
        .unwrap();
    next_matching(&mut inbound, |frame| {
        (running_attempts(frame) == [1, 2]).then_some(())
    })
    .await;
    // The running-tasks gauge says so while they run, not only after one ends.
    assert!(
        metrics
            .render()
            .contains("paygrid_agent_running_tasks{agent=\"gated\"} 2"),
        "{}",
        metrics.render()
    );

    release_first.send(()).unwrap();
    let result = next_matching(&mut inbound, |frame| frame.results.first().cloned()).await;
    assert_eq!(result.task.as_ref().map(|t| t.attempt), Some(1));
    assert_eq!(result.outcome(), pb::Outcome::Succeeded);
    // The heartbeats after it still renew attempt 2.
    let heartbeat = next_matching(&mut inbound, |frame| {
        (!frame.running.is_empty()).then(|| running_attempts(frame))
    })
    .await;
    assert_eq!(heartbeat, [2], "attempt 2 still runs and is reported");

    release_second.send(()).unwrap();
    let result = next_matching(&mut inbound, |frame| frame.results.first().cloned()).await;
    assert_eq!(result.task.as_ref().map(|t| t.attempt), Some(2));
    assert!(String::from_utf8_lossy(&result.output_json).contains("\"attempt\":2"));

    shutdown.cancel();
    drop(frames);
    drop(inbound);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    server.abort();
}

/// Draining: an assignment that arrives after the unit said it drains (the control unit
/// sent it before it saw the flag) runs as part of the drain; the unit leaves only once
/// the control unit has acknowledged the drain and that task has ended; an assignment
/// after the acknowledgement is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_draining_unit_runs_what_was_on_the_way_and_leaves_after_the_acknowledgement() {
    let (release, gate) = oneshot::channel();
    let agent = Gated {
        gates: Mutex::new(HashMap::from([(1, gate)])),
    };
    let Started {
        server,
        shutdown,
        running,
        mut inbound,
        frames,
        ..
    } = start(agent).await;
    shutdown.cancel();
    next_matching(&mut inbound, |frame| frame.draining.then_some(())).await;
    // Sent before the hub saw the flag.
    frames
        .send(Ok(pb::ControlMessage {
            assignments: vec![assignment(1)],
            ..Default::default()
        }))
        .await
        .unwrap();
    next_matching(&mut inbound, |frame| {
        assert!(frame.results.is_empty(), "not refused: {frame:?}");
        (running_attempts(frame) == [1]).then_some(())
    })
    .await;
    frames
        .send(Ok(pb::ControlMessage {
            drain_acknowledged: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    // After the acknowledgement nothing should come; what does is refused.
    frames
        .send(Ok(pb::ControlMessage {
            assignments: vec![assignment(2)],
            ..Default::default()
        }))
        .await
        .unwrap();
    let refused = next_matching(&mut inbound, |frame| frame.results.first().cloned()).await;
    assert_eq!(refused.task.as_ref().map(|t| t.attempt), Some(2));
    assert_eq!(refused.outcome(), pb::Outcome::Refused);
    assert_eq!(refused.error_code, "draining");
    assert!(
        !running.is_finished(),
        "the unit stays while attempt 1 runs"
    );

    release.send(()).unwrap();
    let result = next_matching(&mut inbound, |frame| frame.results.first().cloned()).await;
    assert_eq!(result.task.as_ref().map(|t| t.attempt), Some(1));
    assert_eq!(result.outcome(), pb::Outcome::Succeeded);
    // The unit ends its side of the session, then leaves once the hub ends its own.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = inbound.next().await {}
    });
    ended.await.expect("the unit ends its side after the drain");
    drop(frames);
    let left = tokio::time::timeout(Duration::from_secs(20), running).await;
    assert!(left.is_ok(), "the unit leaves once the drain is over");
    server.abort();
}
