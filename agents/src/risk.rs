//! The risk agent (`risk.score`): amount thresholds and velocity per card token,
//! answering approve, review or decline. A decline is a value, not an error.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use paygrid_execution_unit::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
use serde_json::json;

/// Risk rules.
#[derive(Debug, Clone)]
pub struct RiskRules {
    /// At or above: review.
    pub review_amount_minor: i64,
    /// At or above: decline.
    pub decline_amount_minor: i64,
    /// More than this many payments per card token within `velocity_window`: review.
    pub velocity_max: usize,
    pub velocity_window: Duration,
    /// Card tokens tracked for velocity; the oldest are forgotten past this.
    pub tokens_tracked_max: usize,
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            review_amount_minor: 500_000,
            decline_amount_minor: 5_000_000,
            velocity_max: 20,
            velocity_window: Duration::from_secs(60),
            tokens_tracked_max: 100_000,
        }
    }
}

pub struct RiskAgent {
    rules: RiskRules,
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RiskAgent {
    pub fn new(rules: RiskRules) -> Self {
        Self {
            rules,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn velocity(&self, token: &str) -> usize {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= self.rules.tokens_tracked_max && !seen.contains_key(token) {
            seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.rules.velocity_window)
            });
            if seen.len() >= self.rules.tokens_tracked_max {
                seen.clear();
            }
        }
        let times = seen.entry(token.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.rules.velocity_window)
        {
            times.pop_front();
        }
        times.push_back(now);
        times.truncate(self.rules.velocity_max + 1);
        times.len()
    }
}

#[async_trait::async_trait]
impl Agent for RiskAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "risk".into(),
            role: Role::Worker,
            version: env!("CARGO_PKG_VERSION").into(),
            skills: vec![SkillSpec {
                name: "risk.score".into(),
                description: "Score a payment: approve, review or decline".into(),
                input_schema: json!({"type": "object", "required": ["amount_minor", "card_token"], "properties": {"amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "card_token": {"type": "string"}}}),
                output_schema: json!({"type": "object", "properties": {"decision": {"type": "string", "enum": ["approve", "review", "decline"]}, "score": {"type": "integer"}, "reasons": {"type": "array"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: 256,
            labels: Default::default(),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let amount = match task.i64("amount_minor") {
            Ok(amount) => amount,
            Err(outcome) => return outcome,
        };
        let token = match task.str("card_token") {
            Ok(token) => token.to_owned(),
            Err(outcome) => return outcome,
        };
        let mut reasons = Vec::new();
        let mut score = 0;
        if amount >= self.rules.decline_amount_minor {
            reasons.push("amount_over_decline_threshold");
            score += 100;
        } else if amount >= self.rules.review_amount_minor {
            reasons.push("amount_over_review_threshold");
            score += 50;
        }
        if self.velocity(&token) > self.rules.velocity_max {
            reasons.push("velocity");
            score += 50;
        }
        let decision = match score {
            100.. => "decline",
            50.. => "review",
            _ => "approve",
        };
        TaskOutcome::Succeeded(json!({"decision": decision, "score": score, "reasons": reasons}))
    }
}
