//! The agent-facing `AgentHub` service: registration, one session stream per agent,
//! discovery, health.

use std::pin::Pin;
use std::sync::Arc;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_server::AgentHub;
use paygrid_proto::{AGENT_ID_METADATA, SESSION_TOKEN_METADATA};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::catalog::Catalog;
use crate::error::ControlError;
use crate::model::{AgentCard, AgentId};
use crate::runtime::{Handle, Input, RuntimeConfig};

pub struct AgentHubService {
    handle: Handle,
    catalog: Arc<Catalog>,
    config: RuntimeConfig,
    tools: super::tools::ToolsService,
    /// Routes peer messages between the agents' sessions.
    peers: Arc<super::peers::PeerRouter>,
    /// Where limits changed at run time are kept.
    store: Option<Arc<dyn crate::store::Store>>,
}

impl AgentHubService {
    pub fn new(
        handle: Handle,
        catalog: Arc<Catalog>,
        config: RuntimeConfig,
        workflows: super::workflows::WorkflowsService,
        store: Option<Arc<dyn crate::store::Store>>,
    ) -> Self {
        let peers = Arc::new(super::peers::PeerRouter::new(
            super::peers::PeerConfig::default(),
            config.metrics.clone(),
        ));
        Self {
            tools: super::tools::ToolsService::new(handle.clone(), workflows),
            handle,
            catalog,
            config,
            peers,
            store,
        }
    }
}

fn metadata(
    request: &Request<Streaming<pb::AgentMessage>>,
    key: &str,
) -> Result<String, ControlError> {
    request
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ControlError::Unauthenticated(format!("missing `{key}` metadata: call Register first"))
        })
}

impl AgentHubService {
    /// Pauses (`hold`) or resumes dispatch of a skill or to a gateway: applied, audited
    /// and stored (the store's holds are the ones a restart or a cluster member reads).
    async fn hold(
        &self,
        request: pb::DispatchHoldRequest,
        hold: bool,
    ) -> Result<pb::DispatchHolds, ControlError> {
        use crate::scheduler::operations::{HOLDS_SETTING, HoldOn};
        let on = match (request.skill.is_empty(), request.gateway.is_empty()) {
            (false, true) => HoldOn::Skill(request.skill),
            (true, false) => HoldOn::Gateway(request.gateway),
            _ => {
                return Err(ControlError::invalid(
                    "give one of skill or gateway: what to pause or resume dispatch of",
                ));
            }
        };
        let reason = hold.then(|| {
            if request.reason.is_empty() {
                "paused by operator".to_owned()
            } else {
                request.reason.clone()
            }
        });
        let (kind, name) = match &on {
            HoldOn::Skill(name) => ("skill", name.clone()),
            HoldOn::Gateway(name) => ("gateway", name.clone()),
        };
        let record = crate::audit::record(
            if hold {
                "pause dispatch"
            } else {
                "resume dispatch"
            },
            format!("{kind} {name}"),
            reason.clone().unwrap_or_default(),
        );
        let holds = self
            .handle
            .ask(|reply| Input::Audited {
                record: Box::new(record),
                input: Box::new(Input::Hold { on, reason, reply }),
            })
            .await?;
        if let Some(store) = &self.store {
            let text = serde_json::to_string(&holds)
                .map_err(|e| ControlError::Internal(format!("dispatch holds: {e}")))?;
            store.put_setting(HOLDS_SETTING, &text).await?;
        }
        Ok(holds_to_pb(&holds))
    }
}

fn holds_to_pb(holds: &crate::scheduler::operations::Holds) -> pb::DispatchHolds {
    pb::DispatchHolds {
        skills: holds.skills.clone().into_iter().collect(),
        gateways: holds.gateways.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl AgentHub for AgentHubService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = super::access::caller(&request).cloned();
        let request = request.into_inner();
        let card = request
            .card
            .ok_or_else(|| ControlError::invalid("agent card is required"))?;
        let card = AgentCard::try_from(card)?;
        if let Some(caller) = &caller
            && let Some(skill) = card.skills.iter().find(|s| !caller.may_offer(&s.name))
        {
            return Err(ControlError::PermissionDenied(format!(
                "{} may not offer skill `{}`: the access policy allows it {}",
                caller.describe(),
                skill.name,
                if caller.skills.is_empty() {
                    "no skills".to_owned()
                } else {
                    caller.skills.join(", ")
                }
            ))
            .into());
        }
        for skill in &card.skills {
            self.catalog.learn_skill(&skill.name, &skill.output_schema);
        }
        let execution_unit = request.execution_unit;
        let registration = self
            .handle
            .ask(|reply| Input::Register {
                card,
                execution_unit,
                reply,
            })
            .await?;
        Ok(Response::new(convert::registration_to_pb(registration)))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let agent = AgentId(metadata(&request, AGENT_ID_METADATA)?.into());
        let token = metadata(&request, SESSION_TOKEN_METADATA)?;
        let mut inbound = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(self.config.session_buffer);
        let (peer_sender, peer_receiver) = tokio::sync::mpsc::channel(self.peers.session_buffer());
        let (session, card) = self
            .handle
            .ask(|reply| Input::OpenSession {
                agent: agent.clone(),
                token,
                sender,
                reply,
            })
            .await??;
        let peers = self.peers.clone();
        peers.connect(agent.clone(), session, peer_sender, &card);
        let handle = self.handle.clone();
        // Owned by the session: ends when the agent's stream ends.
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                match message {
                    Ok(mut message) => {
                        if !message.peer.is_empty() {
                            peers.route(&agent, std::mem::take(&mut message.peer));
                        }
                        let reports: Vec<_> = std::mem::take(&mut message.health)
                            .into_iter()
                            .map(convert::health_report_from_pb)
                            .collect();
                        if !reports.is_empty()
                            && handle
                                .send(Input::HealthReports {
                                    agent: agent.clone(),
                                    reports,
                                })
                                .await
                                .is_err()
                        {
                            break;
                        }
                        let batch = convert::agent_events(&agent, message);
                        if !batch.is_empty() && handle.send(Input::Agent(batch)).await.is_err() {
                            break;
                        }
                    }
                    Err(status) => {
                        tracing::debug!(agent = %agent, %status, "agent stream ended with an error");
                        break;
                    }
                }
            }
            peers.disconnect(&agent, session);
            let _ = handle.send(Input::CloseSession { agent, session }).await;
        });
        // Frames become protobuf here, on the session's task, not in the actor.
        // The actor's frames, then an end mark: the session ends when the actor ends it.
        let frames = ReceiverStream::new(receiver)
            .map(|frame| Some(frame.map(convert::frame_to_pb).map_err(Status::from)))
            .chain(tokio_stream::once(None));
        // Peer messages, routed at the edge, join the same stream.
        let peer = ReceiverStream::new(peer_receiver).map(|message| {
            Some(Ok(pb::ControlMessage {
                peer: vec![message],
                ..Default::default()
            }))
        });
        let merged = frames
            .merge(peer)
            .take_while(Option::is_some)
            .filter_map(|message| message);
        Ok(Response::new(Box::pin(merged)))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let health = self.handle.ask(|reply| Input::HealthView { reply }).await?;
        Ok(Response::new(pb::HealthResponse {
            entries: health
                .entries
                .iter()
                .map(convert::health_entry_to_pb)
                .collect(),
            breakers: health.breakers.iter().map(convert::breaker_to_pb).collect(),
            holds: Some(holds_to_pb(&health.holds)),
            adaptive: health
                .adaptive
                .iter()
                .map(|a| pb::AdaptiveLimit {
                    gateway: a.gateway.clone(),
                    limit: a.limit,
                    running: a.running,
                    min: a.min,
                    max: a.max,
                    latency_target_ms: a.latency_target_ms,
                })
                .collect(),
        }))
    }

    async fn pause_dispatch(
        &self,
        request: Request<pb::DispatchHoldRequest>,
    ) -> Result<Response<pb::DispatchHolds>, Status> {
        Ok(Response::new(self.hold(request.into_inner(), true).await?))
    }

    async fn resume_dispatch(
        &self,
        request: Request<pb::DispatchHoldRequest>,
    ) -> Result<Response<pb::DispatchHolds>, Status> {
        Ok(Response::new(self.hold(request.into_inner(), false).await?))
    }

    async fn drain_gateway(
        &self,
        request: Request<pb::DrainGatewayRequest>,
    ) -> Result<Response<pb::DrainGatewayResponse>, Status> {
        let request = request.into_inner();
        if request.gateway.is_empty() {
            return Err(ControlError::invalid("gateway is required").into());
        }
        let (gateway, for_ms) = (request.gateway, request.for_ms);
        let reason = if request.reason.is_empty() {
            "requested".to_owned()
        } else {
            request.reason
        };
        let breaker = self
            .handle
            .ask(|reply| Input::DrainGateway {
                gateway: gateway.clone(),
                for_ms,
                reason,
                reply,
            })
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "gateway {gateway} has no breaker to release (it was never drained or seen)"
                ))
            })?;
        let breaker = convert::breaker_to_pb(&breaker);
        Ok(Response::new(pb::DrainGatewayResponse {
            state: breaker.state,
            open_until_ms: breaker.open_until_ms,
        }))
    }

    async fn list_members(
        &self,
        _request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let Some(ownership) = &self.config.ownership else {
            return Ok(Response::new(pb::ListMembersResponse::default()));
        };
        let members = ownership
            .members()
            .into_iter()
            .map(|(name, url, partitions)| pb::ClusterMember {
                name,
                url,
                partitions,
            })
            .collect();
        Ok(Response::new(pb::ListMembersResponse {
            members,
            answered_by: ownership.member.clone(),
        }))
    }

    async fn get_limits(
        &self,
        _request: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::LimitsState>, Status> {
        let view = self.handle.ask(|reply| Input::GetLimits { reply }).await?;
        Ok(Response::new(convert::limits_to_pb(&view)))
    }

    async fn set_limits(
        &self,
        request: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::LimitsState>, Status> {
        let text = request.into_inner().limits_yaml;
        if text.len() > LIMITS_BYTES_MAX {
            return Err(ControlError::invalid(format!(
                "limits_yaml is {} bytes; the limit is {LIMITS_BYTES_MAX}",
                text.len()
            ))
            .into());
        }
        let rules = crate::scheduler::limits::LimitRules::parse(&text)
            .map_err(ControlError::InvalidArgument)?;
        // Durable first: a change the store refused is not applied.
        if let Some(store) = &self.store {
            store
                .put_setting(crate::scheduler::limits::SETTING, &text)
                .await
                .map_err(ControlError::from)?;
        }
        let view = self
            .handle
            .ask(|reply| Input::Audited {
                record: Box::new(crate::audit::record(
                    "set_limits",
                    "limits",
                    format!("{} bytes of limits", text.len()),
                )),
                input: Box::new(Input::SetLimits { rules, reply }),
            })
            .await?;
        tracing::info!(
            concurrency = view.concurrency_rules,
            rate = view.rate_rules,
            "limits changed"
        );
        Ok(Response::new(convert::limits_to_pb(&view)))
    }

    async fn list_tools(
        &self,
        _request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        Ok(Response::new(self.tools.list().await?))
    }

    async fn call_tool(
        &self,
        request: Request<pb::CallToolRequest>,
    ) -> Result<Response<pb::CallToolResponse>, Status> {
        Ok(Response::new(self.tools.call(request).await?))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let skill = Some(request.into_inner().skill).filter(|s| !s.is_empty());
        let agents = self
            .handle
            .ask(|reply| Input::ListAgents { skill, reply })
            .await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(convert::agent_view_to_pb).collect(),
        }))
    }
}

/// The largest limits document `SetLimits` takes.
const LIMITS_BYTES_MAX: usize = 256 * 1024;
