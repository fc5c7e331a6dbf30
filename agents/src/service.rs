//! Small service agents: checkpoint verification (`verify.amounts`) and receipts
//! (`notify.receipt`).

use paygrid_execution_unit::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
use serde_json::{Value, json};

/// Verifies at a checkpoint that the authorized amount and currency are the ones asked for.
pub struct VerifyAgent;

#[async_trait::async_trait]
impl Agent for VerifyAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "verify".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "verify.amounts".into(),
                description:
                    "At a checkpoint: the authorization matches the requested amount and currency"
                        .into(),
                input_schema: json!({"type": "object", "required": ["inputs", "outputs"]}),
                output_schema: json!({"type": "object", "properties": {"verified": {"type": "boolean"}, "amount_minor": {"type": "integer"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: 256,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let inputs = &task.input["inputs"];
        let authorization = &task.input["outputs"]["authorize"];
        if authorization.is_null() {
            return TaskOutcome::permanent(
                "nothing_to_verify",
                "no `authorize` output reached this checkpoint",
            );
        }
        let wanted = (inputs["amount_minor"].as_i64(), inputs["currency"].as_str());
        let got = (
            authorization["amount_minor"].as_i64(),
            authorization["currency"].as_str(),
        );
        if wanted != got {
            return TaskOutcome::permanent(
                "amount_mismatch",
                format!("requested {wanted:?}, authorized {got:?}"),
            );
        }
        TaskOutcome::Succeeded(json!({"verified": true, "amount_minor": wanted.0}))
    }
}

/// Sends (here: records) a receipt.
pub struct NotifyAgent;

#[async_trait::async_trait]
impl Agent for NotifyAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "notify".into(),
            role: Role::Service,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "notify.receipt".into(),
                description: "Send the customer a receipt".into(),
                input_schema: json!({"type": "object", "required": ["payment_id"]}),
                output_schema: json!({"type": "object", "properties": {"receipt_id": {"type": "string"}, "sent": {"type": "boolean"}}}),
                effect: SkillEffect::State,
            }],
            max_concurrency: 256,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let payment = task
            .input
            .get("payment_id")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        tracing::info!(payment, "receipt sent");
        TaskOutcome::Succeeded(json!({"receipt_id": format!("rcpt_{payment}"), "sent": true}))
    }
}

/// The benchmark agent (`bench.sleep`): sleeps `sleep_ms` (or its default) and answers.
pub struct SleepAgent {
    pub default_sleep_ms: u64,
    pub max_concurrency: u32,
}

#[async_trait::async_trait]
impl Agent for SleepAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "sleep".into(),
            role: Role::Worker,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "bench.sleep".into(),
                description: "Sleep for sleep_ms milliseconds".into(),
                input_schema: json!({"type": "object", "properties": {"sleep_ms": {"type": "integer"}}}),
                output_schema: json!({"type": "object", "properties": {"slept_ms": {"type": "integer"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: self.max_concurrency,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let received_at_us = unix_micros();
        let sleep_ms = task
            .input
            .get("sleep_ms")
            .and_then(Value::as_u64)
            .unwrap_or(self.default_sleep_ms);
        crate::precise::sleep(std::time::Duration::from_millis(sleep_ms)).await;
        // Wall-clock stamps let the benchmark measure scheduling overhead between tasks.
        TaskOutcome::Succeeded(
            json!({"slept_ms": sleep_ms, "received_at_us": received_at_us, "finished_at_us": unix_micros()}),
        )
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
