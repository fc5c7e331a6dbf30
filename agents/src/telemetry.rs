//! The telemetry support agent: relays its execution unit's health (per gateway and per
//! agent: requests, errors, latency, saturation) to the control unit on its session, and
//! answers `telemetry.report` with the same snapshot.

use std::sync::Arc;

use paygrid_execution_unit::{
    Agent, AgentCard, HealthCollector, Role, SkillEffect, SkillSpec, Task, TaskOutcome,
};
use serde_json::json;

pub struct TelemetryAgent {
    health: Arc<HealthCollector>,
}

impl TelemetryAgent {
    /// Relays `health`, the collector its execution unit feeds.
    pub fn new(health: Arc<HealthCollector>) -> Self {
        Self { health }
    }
}

#[async_trait::async_trait]
impl Agent for TelemetryAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "telemetry".into(),
            role: Role::Support,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "telemetry.report".into(),
                description: "Health of this execution unit's gateways and agents".into(),
                input_schema: json!({"type": "object"}),
                output_schema: json!({"type": "object", "properties": {"reports": {"type": "array"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: 4,
            labels: Default::default(),
        }
    }

    async fn handle(&self, _task: Task) -> TaskOutcome {
        let reports: Vec<_> = self
            .health
            .reports()
            .into_iter()
            .map(|r| json!({"kind": r.kind, "subject": r.subject, "requests": r.requests, "errors": r.errors, "latency_p50_ms": r.latency_p50_ms, "latency_p99_ms": r.latency_p99_ms, "saturation": r.saturation}))
            .collect();
        TaskOutcome::Succeeded(json!({"reports": reports}))
    }
}
