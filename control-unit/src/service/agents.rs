//! The agent-facing `AgentHub` service: registration, one session stream per agent,
//! discovery.

use std::pin::Pin;
use std::sync::Arc;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_server::AgentHub;
use paygrid_proto::{AGENT_ID_METADATA, SESSION_TOKEN_METADATA};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::workflows::SpecRegistry;
use crate::model::{AgentId, WorkflowId};
use crate::runtime::{Handle, Input, RuntimeConfig};
use crate::scheduler::{AgentEvent, Outcome, Slot};

pub struct AgentHubService {
    handle: Handle,
    registry: Arc<SpecRegistry>,
    config: RuntimeConfig,
}

impl AgentHubService {
    pub fn new(handle: Handle, registry: Arc<SpecRegistry>, config: RuntimeConfig) -> Self {
        Self {
            handle,
            registry,
            config,
        }
    }
}

/// Limits on what an agent card may declare.
const SKILLS_MAX: usize = 256;
const CONCURRENCY_MAX: u32 = 10_000;

fn check_card(card: &pb::AgentCard) -> Result<(), Status> {
    if card.name.is_empty() || card.name.len() > 64 {
        return Err(Status::invalid_argument(
            "agent card: name must be 1 to 64 characters",
        ));
    }
    if card.skills.is_empty() || card.skills.len() > SKILLS_MAX {
        return Err(Status::invalid_argument(format!(
            "agent card `{}`: declare 1 to {SKILLS_MAX} skills",
            card.name
        )));
    }
    if card.max_concurrency == 0 || card.max_concurrency > CONCURRENCY_MAX {
        return Err(Status::invalid_argument(format!(
            "agent card `{}`: max_concurrency must be 1 to {CONCURRENCY_MAX}",
            card.name
        )));
    }
    for skill in &card.skills {
        for (what, schema) in [
            ("input", &skill.input_schema_json),
            ("output", &skill.output_schema_json),
        ] {
            if !schema.is_empty() && serde_json::from_str::<serde_json::Value>(schema).is_err() {
                return Err(Status::invalid_argument(format!(
                    "agent card `{}`: skill `{}` has an {what} schema that is not JSON",
                    card.name, skill.name
                )));
            }
        }
    }
    Ok(())
}

fn metadata(request: &Request<Streaming<pb::AgentMessage>>, key: &str) -> Result<String, Status> {
    request
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            Status::unauthenticated(format!("missing `{key}` metadata: call Register first"))
        })
}

fn task_ref(task: Option<&pb::TaskRef>) -> Option<(Slot, u32)> {
    let task = task?;
    let workflow: WorkflowId = task.workflow_id.parse().ok()?;
    Some((Slot::from_wire(workflow, task.task_index), task.attempt))
}

/// An agent's output as stored: card numbers masked and CVV-like fields replaced. Most
/// outputs hold neither, and skip the parse.
fn redacted_output(bytes: &[u8]) -> std::sync::Arc<str> {
    let text = String::from_utf8_lossy(bytes);
    if !paygrid_telemetry::redact::might_hold_card_data(&text) {
        return text.into();
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            if paygrid_telemetry::redact::redact_json(&mut value) {
                tracing::warn!("an agent output held card data; it was masked before storing");
            }
            value.to_string().into()
        }
        Err(_) => paygrid_telemetry::redact::redact_text(&text).into(),
    }
}

/// One agent frame as scheduler events.
fn events(agent: &AgentId, message: pb::AgentMessage) -> Vec<AgentEvent> {
    let mut events = Vec::with_capacity(message.results.len() + 2);
    for result in message.results {
        let Some((slot, attempt)) = task_ref(result.task.as_ref()) else {
            continue;
        };
        // What agents answer is stored and shown: no card data in it (DESIGN §4).
        let error = || {
            let error = if result.error_code.is_empty() {
                result.error_message.clone()
            } else {
                format!("{}: {}", result.error_code, result.error_message)
            };
            paygrid_telemetry::redact::redact_text(&error)
        };
        let outcome = match pb::Outcome::try_from(result.outcome) {
            Ok(pb::Outcome::Succeeded) => Outcome::Succeeded {
                output: redacted_output(&result.output_json),
            },
            Ok(pb::Outcome::Retryable) => Outcome::Retryable { error: error() },
            Ok(pb::Outcome::Permanent) => Outcome::Permanent { error: error() },
            Ok(pb::Outcome::Unknown) => Outcome::Unknown { error: error() },
            Ok(pb::Outcome::Cancelled) => Outcome::Cancelled,
            Ok(pb::Outcome::Refused) => Outcome::Refused,
            _ => Outcome::Retryable {
                error: format!("agent sent outcome {}", result.outcome),
            },
        };
        events.push(AgentEvent::Result {
            agent: agent.clone(),
            slot,
            attempt,
            outcome,
        });
    }
    if message.credits > 0 {
        events.push(AgentEvent::Credits {
            agent: agent.clone(),
            credits: message.credits,
        });
    }
    if !message.running.is_empty() {
        let running = message
            .running
            .iter()
            .filter_map(|t| task_ref(Some(t)))
            .collect();
        events.push(AgentEvent::Heartbeat {
            agent: agent.clone(),
            running,
        });
    }
    if message.draining {
        events.push(AgentEvent::Draining {
            agent: agent.clone(),
        });
    }
    events
}

#[tonic::async_trait]
impl AgentHub for AgentHubService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let card = request
            .card
            .ok_or_else(|| Status::invalid_argument("agent card is required"))?;
        check_card(&card)?;
        for skill in &card.skills {
            self.registry
                .learn_skill(&skill.name, &skill.output_schema_json);
        }
        let execution_unit = request.execution_unit;
        Ok(Response::new(
            self.handle
                .ask(|reply| Input::Register {
                    card,
                    execution_unit,
                    reply,
                })
                .await?,
        ))
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
        let session = self
            .handle
            .ask(|reply| Input::OpenSession {
                agent: agent.clone(),
                token,
                sender,
                reply,
            })
            .await??;
        let handle = self.handle.clone();
        // Owned by the session: ends when the agent's stream ends.
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                match message {
                    Ok(mut message) => {
                        let reports = std::mem::take(&mut message.health);
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
                        let batch = events(&agent, message);
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
            let _ = handle.send(Input::CloseSession { agent, session }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let entries = self.handle.ask(|reply| Input::HealthView { reply }).await?;
        Ok(Response::new(pb::HealthResponse { entries }))
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
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_outputs_and_errors_are_stored_without_card_data() {
        let output = redacted_output(
            br#"{"receipt":"paid with 4111 1111 1111 1111","cvv":"737","amount_minor":1250}"#,
        );
        assert!(!output.contains("4111 1111 1111 1111"), "{output}");
        assert!(!output.contains("737"), "{output}");
        assert!(output.contains("1250"), "{output}");
        // Not JSON: masked as text.
        let output = redacted_output(b"card 4242424242424242 cvv=123");
        assert!(!output.contains("4242424242424242"), "{output}");
        assert!(!output.contains("123"), "{output}");
        // Most outputs hold no card data and are stored as they came.
        let plain = br#"{"authorization_id":"auth_alpha_1"}"#;
        assert_eq!(
            &*redacted_output(plain),
            std::str::from_utf8(plain).unwrap()
        );

        let message = pb::AgentMessage {
            results: vec![pb::TaskResult {
                task: Some(pb::TaskRef {
                    workflow_id: WorkflowId(7).to_string(),
                    task_index: 0,
                    attempt: 1,
                }),
                outcome: pb::Outcome::Permanent.into(),
                error_code: "card_declined".into(),
                error_message: "card 4000 0566 5566 5556 declined, cvv=737".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let events = events(&AgentId("agent-1".into()), message);
        let Some(AgentEvent::Result {
            outcome: Outcome::Permanent { error },
            ..
        }) = events.first()
        else {
            panic!("a permanent result: {events:?}");
        };
        assert!(error.starts_with("card_declined: "), "{error}");
        assert!(!error.contains("4000 0566 5566 5556"), "{error}");
        assert!(!error.contains("737"), "{error}");
    }
}
