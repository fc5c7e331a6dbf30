//! Metrics derived from committed changes, and the gauges computed before a scrape.

use std::collections::BTreeMap;

use paygrid_telemetry::metrics::Registry;

use crate::metric_names as names;
use crate::model::{Priority, TaskStatus};
use crate::scheduler::breaker::{BreakerState, Transition};
use crate::scheduler::{Change, Record, Scheduler, Slot};

/// The skill whose successes carry the gateway's fee.
const CAPTURE: &str = "gateway.capture";

/// A capture's amount and currency, from its output.
fn captured(output: &str) -> Option<(i64, String)> {
    let output: serde_json::Value = serde_json::from_str(output).ok()?;
    Some((
        output["amount_minor"].as_i64()?,
        output["currency"].as_str().unwrap_or("").to_owned(),
    ))
}

/// Metrics from one committed change.
pub(super) fn observe(metrics: &Registry, core: &Scheduler, record: &Record) {
    let Some(workflow) = core.workflow(record.workflow) else {
        return;
    };
    match &record.change {
        Change::Workflow { status, .. } if status.is_terminal() => {
            let labels = [
                ("name", workflow.spec.name.as_str()),
                ("status", status.as_str()),
            ];
            metrics.count(&names::WORKFLOWS_FINISHED, &labels, 1);
        }
        Change::Task {
            task,
            compensation,
            status,
            detail,
            agent,
            output,
            ..
        } => {
            let compiled = &workflow.spec.tasks[*task as usize];
            let skill = if *compensation {
                compiled
                    .compensate
                    .as_ref()
                    .map_or("", |c| c.skill.as_str())
            } else {
                compiled.skill().unwrap_or("")
            };
            let slot = Slot {
                workflow: record.workflow,
                task: *task,
                compensation: *compensation,
            };
            let Some(execution) = workflow.execution(slot) else {
                return;
            };
            let seconds = |from: u64| record.at.saturating_sub(from) as f64 / 1000.0;
            let by_skill = [("skill", skill)];
            // Which gateway takes the traffic, and what it costs: each dispatch to a
            // gateway's agent, and each capture's fee at that gateway's `cost_bps`.
            let gateway_agent = agent
                .as_ref()
                .or(execution.agent.as_ref())
                .and_then(|a| core.agent(a));
            if let Some(gateway_agent) = gateway_agent
                && let Some(gateway) = gateway_agent.labels.get("gateway")
            {
                if *status == TaskStatus::Dispatched {
                    metrics.count(
                        &names::GATEWAY_DISPATCHES,
                        &[("gateway", gateway.as_str()), ("skill", skill)],
                        1,
                    );
                }
                if *status == TaskStatus::Succeeded
                    && skill == CAPTURE
                    && gateway_agent.cost_bps != u32::MAX
                    && let Some((amount, currency)) = output.as_deref().and_then(captured)
                {
                    let fee = amount * i64::from(gateway_agent.cost_bps) / 10_000;
                    metrics.count(
                        &names::GATEWAY_COST,
                        &[
                            ("gateway", gateway.as_str()),
                            ("currency", currency.as_str()),
                        ],
                        u64::try_from(fee).unwrap_or(0),
                    );
                }
            }
            match status {
                TaskStatus::Dispatched => metrics.observe(
                    &names::DISPATCH_LATENCY,
                    &by_skill,
                    seconds(execution.ready_at),
                ),
                TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Compensated => {
                    metrics.observe(
                        &names::TASK_DURATION,
                        &[("skill", skill), ("status", status.as_str())],
                        seconds(execution.attempt_started_at),
                    );
                }
                TaskStatus::Backoff => {
                    metrics.count(&names::TASK_RETRIES, &by_skill, 1);
                    let detail = detail.as_deref().unwrap_or("");
                    if detail.contains("timed out") {
                        metrics.count(&names::TASK_TIMEOUTS, &by_skill, 1);
                    } else if detail.contains("lease") {
                        metrics.count(&names::TASK_LEASE_EXPIRATIONS, &by_skill, 1);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// The reconciliation run a committed change finished, if it is one: a `reconcile.gateway`
/// task that succeeded.
pub(super) fn reconciliation(
    core: &Scheduler,
    record: &Record,
) -> Option<crate::reconciliation::Summary> {
    let Change::Task {
        task,
        compensation: false,
        status: TaskStatus::Succeeded,
        output: Some(output),
        ..
    } = &record.change
    else {
        return None;
    };
    let workflow = core.workflow(record.workflow)?;
    let compiled = workflow.spec.tasks.get(*task as usize)?;
    if compiled.skill() != Some(crate::reconciliation::SKILL) {
        return None;
    }
    crate::reconciliation::Summary::from_output(record.workflow, output)
}

/// Gauges computed on demand: workflows by status, ready tasks by priority, agents.
pub(super) fn refresh_gauges(metrics: &Registry, core: &Scheduler, agents_connected: usize) {
    let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    for status in [
        "running",
        "compensating",
        "succeeded",
        "failed",
        "compensated",
        "cancelled",
    ] {
        by_status.insert(status, 0);
    }
    for workflow in core.workflows() {
        *by_status.entry(workflow.status.as_str()).or_default() += 1;
    }
    for (status, count) in by_status {
        metrics.gauge(&names::WORKFLOWS, &[("status", status)], count as i64);
    }
    for (priority, depth) in Priority::ALL.iter().zip(core.ready_depth()) {
        metrics.gauge(
            &names::READY_QUEUE_DEPTH,
            &[("priority", priority.as_str())],
            depth as i64,
        );
    }
    metrics.gauge(&names::AGENT_SESSIONS, &[], agents_connected as i64);
    for (rule, state) in core.limits().adaptive() {
        metrics.gauge(
            &names::GATEWAY_CONCURRENCY_LIMIT,
            &[("gateway", rule.gateway.as_str())],
            i64::from(state.allowed()),
        );
    }
}

/// A breaker's transition: its state gauge, a counter, a log line, and a span with the
/// transition as an event (when spans are exported), so SREs see it next to the traces.
pub(super) fn breaker_changed(metrics: &Registry, transition: &Transition) {
    let gateway = transition.gateway.as_str();
    let state = match transition.to {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    };
    metrics.gauge(&names::BREAKER_STATE, &[("gateway", gateway)], state);
    metrics.count(
        &names::BREAKER_TRANSITIONS,
        &[("gateway", gateway), ("to", transition.to.as_str())],
        1,
    );
    tracing::warn!(
        gateway,
        from = transition.from.as_str(),
        to = transition.to.as_str(),
        reason = %transition.reason,
        "circuit breaker changed"
    );
    if paygrid_telemetry::otel::exporting() {
        let span = tracing::info_span!(
            target: "paygrid::breaker",
            "breaker",
            otel.name = format!("breaker {gateway}"),
            paygrid.gateway = gateway,
        );
        span.in_scope(|| {
            tracing::info!(
                target: "paygrid::breaker",
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                reason = %transition.reason,
                "paygrid.breaker.transition"
            );
        });
    }
}
