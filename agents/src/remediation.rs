//! The remediation service agent: the skills remediation workflows use to act on the
//! control unit. `remediate.drain` holds a gateway's breaker open for a while (no task goes
//! to it: traffic is rerouted), `remediate.reopen` ends the drain (half-open: trial tasks
//! decide). Both call the control unit's `AgentHub.DrainGateway`; both are idempotent (the
//! same drain twice holds the same gateway, a second reopen finds it half-open already).
//! `remediate.cancel_workflow` cancels a workflow (`Workflows.Cancel`), whose own
//! compensations then undo what it did (a void for a stale authorization).

use std::collections::BTreeMap;

use paygrid_execution_unit::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

pub struct RemediationAgent {
    control: Channel,
}

impl RemediationAgent {
    /// An agent that acts on the control unit at `control_endpoint` (connected lazily).
    /// It authenticates as the execution unit (`security`'s client certificate).
    pub fn new(
        control_endpoint: &str,
        security: &paygrid_security::ClientSecurity,
    ) -> Result<Self, tonic::transport::Error> {
        let control = security.channel_lazy(security.endpoint(control_endpoint)?);
        Ok(Self { control })
    }

    async fn drain(&self, task: &Task, for_ms: u64) -> TaskOutcome {
        let gateway = match task.str("gateway") {
            Ok(gateway) => gateway.to_owned(),
            Err(outcome) => return outcome,
        };
        let reason = task
            .input
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("remediation")
            .to_owned();
        let request = pb::DrainGatewayRequest {
            gateway: gateway.clone(),
            for_ms,
            reason: format!("{reason} (workflow {})", task.workflow_id),
        };
        match AgentHubClient::new(self.control.clone())
            .drain_gateway(request)
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                TaskOutcome::Succeeded(json!({
                    "gateway": gateway,
                    "state": response.state,
                    "open_until_ms": response.open_until_ms,
                }))
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                // Nothing to reopen: the gateway is not drained.
                TaskOutcome::Succeeded(json!({"gateway": gateway, "state": "closed"}))
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                TaskOutcome::invalid_input(status.message().to_owned())
            }
            Err(status) => TaskOutcome::retryable("control_unit_unavailable", status.message()),
        }
    }
}

impl RemediationAgent {
    async fn cancel_workflow(&self, task: &Task) -> TaskOutcome {
        let workflow_id = match task.str("workflow_id") {
            Ok(id) => id.to_owned(),
            Err(outcome) => return outcome,
        };
        let reason = task
            .input
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("cancelled by remediation")
            .to_owned();
        let request = pb::CancelWorkflowRequest {
            workflow_id: workflow_id.clone(),
            reason,
        };
        match WorkflowsClient::new(self.control.clone())
            .cancel(request)
            .await
        {
            // Cancelling an ended workflow answers its status: idempotent.
            Ok(response) => TaskOutcome::Succeeded(json!({
                "workflow_id": workflow_id,
                "status": response.into_inner().status().as_str_name(),
            })),
            Err(status) if status.code() == tonic::Code::NotFound => {
                TaskOutcome::permanent("workflow_not_found", status.message())
            }
            Err(status) => TaskOutcome::retryable("control_unit_unavailable", status.message()),
        }
    }
}

#[async_trait::async_trait]
impl Agent for RemediationAgent {
    fn card(&self) -> AgentCard {
        let skill = |name: &str, description: &str, input: Value| SkillSpec {
            name: name.into(),
            description: description.into(),
            input_schema: input,
            output_schema: json!({"type": "object", "properties": {"gateway": {"type": "string"}, "state": {"type": "string"}, "open_until_ms": {"type": "integer"}}}),
            effect: SkillEffect::State,
        };
        AgentCard {
            name: "remediation".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![
                skill(
                    "remediate.drain",
                    "Drain a gateway: hold its circuit breaker open for for_ms, rerouting its traffic",
                    json!({"type": "object", "required": ["gateway", "for_ms"], "properties": {"gateway": {"type": "string"}, "for_ms": {"type": "integer", "minimum": 1}, "reason": {"type": "string"}}}),
                ),
                skill(
                    "remediate.reopen",
                    "End a gateway's drain: half-open, trial tasks decide",
                    json!({"type": "object", "required": ["gateway"], "properties": {"gateway": {"type": "string"}, "reason": {"type": "string"}}}),
                ),
                SkillSpec {
                    name: "remediate.alert".into(),
                    description:
                        "Raise an alert: a warning in this unit's log, the message as output".into(),
                    input_schema: json!({"type": "object", "required": ["subject", "message"], "properties": {"subject": {"type": "string"}, "message": {"type": "string"}}}),
                    output_schema: json!({"type": "object", "properties": {"subject": {"type": "string"}, "message": {"type": "string"}}}),
                    effect: SkillEffect::State,
                },
                SkillSpec {
                    name: "remediate.cancel_workflow".into(),
                    description: "Cancel a workflow; its compensations undo what it did".into(),
                    input_schema: json!({"type": "object", "required": ["workflow_id"], "properties": {"workflow_id": {"type": "string"}, "reason": {"type": "string"}}}),
                    output_schema: json!({"type": "object", "properties": {"workflow_id": {"type": "string"}, "status": {"type": "string"}}}),
                    effect: SkillEffect::State,
                },
            ],
            max_concurrency: 16,
            labels: BTreeMap::new(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        match task.skill.as_str() {
            "remediate.drain" => match task.i64("for_ms") {
                Ok(for_ms) if for_ms > 0 => self.drain(&task, for_ms as u64).await,
                Ok(_) => TaskOutcome::invalid_input("`for_ms` must be positive"),
                Err(outcome) => outcome,
            },
            "remediate.reopen" => self.drain(&task, 0).await,
            "remediate.cancel_workflow" => self.cancel_workflow(&task).await,
            "remediate.alert" => {
                let (subject, message) = match (task.str("subject"), task.str("message")) {
                    (Ok(subject), Ok(message)) => (subject.to_owned(), message.to_owned()),
                    (Err(outcome), _) | (_, Err(outcome)) => return outcome,
                };
                tracing::warn!(alert = %subject, %message, "remediation alert");
                TaskOutcome::Succeeded(json!({"subject": subject, "message": message}))
            }
            other => TaskOutcome::permanent(
                "unknown_skill",
                format!("remediation agent has no skill {other}"),
            ),
        }
    }
}
