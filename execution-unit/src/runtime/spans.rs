//! The agent's spans: its handling of an attempt and of a peer's request, each a child
//! of the control unit's span carried in the message, and the outcome recorded on it.
//! Built only while spans are exported.

use paygrid_proto::v1 as pb;
use paygrid_telemetry::semconv;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The agent's handling of one attempt: a child of the attempt's span in the control
/// unit (carried in the assignment). Only built when spans are exported.
pub(super) fn handling_span(
    assignment: &pb::Assignment,
    task: &pb::TaskRef,
    agent_id: &str,
) -> tracing::Span {
    if !paygrid_telemetry::otel::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "paygrid::agent",
        "handle",
        otel.name = format!("handle {}", assignment.skill),
        otel.kind = "server",
    );
    paygrid_telemetry::context::set_parent(&span, &assignment.traceparent, &assignment.tracestate);
    span.set_attribute(semconv::WORKFLOW_ID, task.workflow_id.clone());
    span.set_attribute(semconv::WORKFLOW_NAME, assignment.workflow_name.clone());
    span.set_attribute(semconv::TASK_ID, assignment.task_id.clone());
    span.set_attribute(semconv::TASK_ATTEMPT, i64::from(task.attempt));
    span.set_attribute(semconv::SKILL, assignment.skill.clone());
    span.set_attribute(semconv::AGENT_ID, agent_id.to_owned());
    span
}

/// The agent's handling of a peer's request: a child of the control unit's `peer` span.
pub(super) fn peer_span(request: &pb::PeerMessage, agent_id: &str) -> tracing::Span {
    if !paygrid_telemetry::otel::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "paygrid::agent",
        "handle peer",
        otel.name = format!("handle peer {}", request.skill),
        otel.kind = "server",
    );
    paygrid_telemetry::context::set_parent(&span, &request.traceparent, &request.tracestate);
    span.set_attribute(semconv::SKILL, request.skill.clone());
    span.set_attribute(semconv::AGENT_ID, agent_id.to_owned());
    span.set_attribute(semconv::PEER_FROM, request.from_agent.clone());
    if !request.context_id.is_empty() {
        span.set_attribute(semconv::WORKFLOW_ID, request.context_id.clone());
    }
    span
}

/// The outcome on the handling span: status, and an event for a failure.
pub(super) fn record_outcome(span: &tracing::Span, result: &pb::TaskResult) {
    if span.is_none() {
        return;
    }
    let outcome = result.outcome();
    let name = outcome.as_str_name();
    let name = name
        .strip_prefix("OUTCOME_")
        .unwrap_or(name)
        .to_ascii_lowercase();
    span.set_attribute(semconv::ATTEMPT_OUTCOME, name);
    match outcome {
        pb::Outcome::Succeeded => span.set_status(opentelemetry::trace::Status::Ok),
        outcome => paygrid_telemetry::context::record_error(
            span,
            &result.error_code,
            &result.error_message,
            outcome != pb::Outcome::Permanent,
        ),
    }
}
