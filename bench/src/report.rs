//! What a load run measured, and how it is printed: the scheduling overheads read back
//! from a sample of workflows, each scenario's summary (JSON), its table row, and the
//! lines under the table.

use std::collections::BTreeMap;
use std::time::Duration;

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use prost::Message;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::load::{Sample, percentile};

/// Scheduling overhead over a sample of workflows: the hop (microseconds from a task's
/// result to the next task's start, by the sleep agent's clock), and inside the control
/// unit (milliseconds, by its clock): ready → assigned, and result → next ready.
#[derive(Default)]
pub(crate) struct Overheads {
    hops_us: Vec<f64>,
    ready_to_assigned_ms: Vec<f64>,
    result_to_ready_ms: Vec<f64>,
}

/// Workflows read back for the overheads at most, spread over the run. The hop's p99
/// over 500 seq3 workflows (1,000 hops) was their 10th largest: it swung by hundreds of
/// microseconds from run to run on sampling alone.
const OVERHEAD_WORKFLOWS: usize = 5_000;

pub(crate) async fn hop_overheads(channel: Channel, samples: &[Sample], fanout: bool) -> Overheads {
    let mut client = WorkflowsClient::new(channel);
    let mut hops = Vec::new();
    let mut ready_to_assigned = Vec::new();
    let mut result_to_ready = Vec::new();
    let step = (samples.len() / OVERHEAD_WORKFLOWS).max(1);
    for sample in samples.iter().step_by(step) {
        let Ok(workflow) = client
            .get(pb::GetWorkflowRequest {
                workflow_id: sample.id.clone(),
                ..Default::default()
            })
            .await
        else {
            continue;
        };
        let workflow = workflow.into_inner();
        let by_id: BTreeMap<&str, &pb::TaskState> = workflow
            .tasks
            .iter()
            .map(|t| (t.task_id.as_str(), t))
            .collect();
        for task in &workflow.tasks {
            if task.ready_at_ms > 0 && task.attempt_started_at_ms >= task.ready_at_ms {
                ready_to_assigned.push((task.attempt_started_at_ms - task.ready_at_ms) as f64);
            }
        }
        let next_ready = |from: &str, to: &str| {
            Some((by_id.get(to)?.ready_at_ms - by_id.get(from)?.finished_at_ms) as f64)
        };
        if fanout {
            result_to_ready.extend(next_ready("head", "p0"));
        } else {
            result_to_ready.extend(next_ready("a", "b"));
            result_to_ready.extend(next_ready("b", "c"));
        }
        let stamps: BTreeMap<String, (f64, f64)> = workflow
            .tasks
            .iter()
            .filter_map(|t| {
                let output: Value = serde_json::from_str(&t.output_json).ok()?;
                Some((
                    t.task_id.clone(),
                    (
                        output["received_at_us"].as_f64()?,
                        output["finished_at_us"].as_f64()?,
                    ),
                ))
            })
            .collect();
        let hop = |from: &str, to: &str| Some(stamps.get(to)?.0 - stamps.get(from)?.1);
        if fanout {
            for i in 0..50 {
                hops.extend(hop("head", &format!("p{i}")));
            }
            let last = (0..50)
                .filter_map(|i| stamps.get(&format!("p{i}")).map(|s| s.1))
                .fold(0.0, f64::max);
            if let Some((received, _)) = stamps.get("tail") {
                hops.push(received - last);
            }
        } else {
            hops.extend(hop("a", "b"));
            hops.extend(hop("b", "c"));
        }
    }
    for list in [&mut hops, &mut ready_to_assigned, &mut result_to_ready] {
        list.sort_by(f64::total_cmp);
    }
    Overheads {
        hops_us: hops,
        ready_to_assigned_ms: ready_to_assigned,
        result_to_ready_ms: result_to_ready,
    }
}

pub(crate) fn summarize(
    name: &str,
    samples: &[Sample],
    elapsed: Duration,
    tasks_per_workflow: usize,
    cpu: f64,
    overheads: &Overheads,
) -> Value {
    let hops = &overheads.hops_us;
    let (ready_to_assigned, result_to_ready) = (
        &overheads.ready_to_assigned_ms,
        &overheads.result_to_ready_ms,
    );
    let mut latencies: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let workflows_per_s = samples.len() as f64 / elapsed.as_secs_f64();
    let by_class = |critical: bool| {
        let mut l: Vec<f64> = samples
            .iter()
            .filter(|s| s.critical == critical)
            .map(|s| s.latency.as_secs_f64() * 1e3)
            .collect();
        l.sort_by(f64::total_cmp);
        json!({"count": l.len(), "p50_ms": percentile(&l, 50.0), "p99_ms": percentile(&l, 99.0), "max_ms": l.last().copied().unwrap_or(0.0)})
    };
    json!({
        "scenario": name,
        "workflows": samples.len(),
        "failed": samples.iter().filter(|s| !s.succeeded).count(),
        "seconds": elapsed.as_secs_f64(),
        "workflows_per_s": workflows_per_s,
        "tasks_per_s": workflows_per_s * tasks_per_workflow as f64,
        "latency_ms": {"p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0), "p99": percentile(&latencies, 99.0), "max": latencies.last().copied().unwrap_or(0.0)},
        "hop_overhead_us": {"samples": hops.len(), "p50": percentile(hops, 50.0), "p99": percentile(hops, 99.0)},
        "ready_to_assigned_ms": {"samples": ready_to_assigned.len(), "p50": percentile(ready_to_assigned, 50.0), "p99": percentile(ready_to_assigned, 99.0)},
        "result_to_next_ready_ms": {"samples": result_to_ready.len(), "p50": percentile(result_to_ready, 50.0), "p99": percentile(result_to_ready, 99.0)},
        "control_cpu_seconds": cpu,
        "by_priority": if name == "priority" { json!({"critical": by_class(true), "low": by_class(false)}) } else { Value::Null },
    })
}

pub(crate) fn assignment_and_result_sizes(task_ms: u64) -> (usize, usize) {
    let assignment = pb::ControlMessage {
        assignments: vec![pb::Assignment {
            task: Some(pb::TaskRef {
                workflow_id: "01a20a19-4fd3-753f-b6dc-50d29353f990".into(),
                task_index: 1,
                attempt: 1,
            }),
            task_id: "b".into(),
            skill: "bench.sleep".into(),
            input_json: format!("{{\"sleep_ms\":{task_ms}}}").into_bytes().into(),
            deadline_unix_ms: 1_795_465_760_723,
            idempotency_key: "01a20a19-4fd3-753f-b6dc-50d29353f990:b".into(),
            traceparent: "00-3b5e1f0c2d4a6b8c9d0e1f2a3b4c5d6e-1a2b3c4d5e6f7081-01".into(),
            tracestate: String::new(),
            workflow_name: "bench-seq3".into(),
            settle: false,
        }],
        ..Default::default()
    };
    let result = pb::AgentMessage {
        credits: 1,
        results: vec![pb::TaskResult {
            task: Some(pb::TaskRef { workflow_id: "01a20a19-4fd3-753f-b6dc-50d29353f990".into(), task_index: 1, attempt: 1 }),
            outcome: pb::Outcome::Succeeded.into(),
            output_json: br#"{"finished_at_us":1795465760724123,"received_at_us":1795465760723001,"slept_ms":1}"#.to_vec().into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    (assignment.encoded_len(), result.encoded_len())
}

/// The memory, peak RSS and ceiling lines under the table.
pub(crate) fn print_report(report: &Value) {
    println!();
    if let Some(memory) = &report["control_unit"]["memory_per_inflight_workflow"].as_object() {
        println!(
            "memory: {} workflows in flight, {:.0} bytes each (RSS {} kB → {} kB)",
            memory["workflows"],
            memory["bytes_per_workflow"].as_f64().unwrap_or(0.0),
            memory["rss_before_kb"],
            memory["rss_after_kb"]
        );
        println!(
            "        accepted in {:.1} s ({:.0}/s); store {:.1} MB; after SIGKILL, answering again in {:.1} s (RSS {} kB)",
            memory["accept_s"].as_f64().unwrap_or(0.0),
            memory["accepted_per_s"].as_f64().unwrap_or(0.0),
            memory["store_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            memory["recover_s"].as_f64().unwrap_or(0.0),
            memory["rss_recovered_kb"]
        );
    }
    println!(
        "control unit peak RSS: {} kB",
        report["control_unit"]["peak_rss_kb"]
    );
    let ceiling = &report["ceiling"];
    println!(
        "ceiling: raw gRPC bidi ping-pong {:.0} round trips/s ({} B out, {} B back, 256 in flight); best Paygrid tasks/s {:.0} = {:.1}% of it",
        ceiling["round_trips_per_s"].as_f64().unwrap_or(0.0),
        ceiling["assignment_bytes"],
        ceiling["result_bytes"],
        ceiling["best_tasks_per_s"].as_f64().unwrap_or(0.0),
        100.0 * ceiling["ratio"].as_f64().unwrap_or(0.0)
    );
}

pub(crate) fn print_row(summary: &Value) {
    let l = &summary["latency_ms"];
    let h = &summary["hop_overhead_us"];
    println!(
        "{:<16} {:>7} wf {:>8.0} wf/s {:>9.0} tasks/s  e2e ms p50 {:>6.1} p90 {:>6.1} p99 {:>6.1} max {:>7.1}  hop us p50 {:>6.0} p99 {:>6.0}  cpu {:>5.1}s  failed {}  steal {:.0}%",
        summary["scenario"].as_str().unwrap_or(""),
        summary["workflows"],
        summary["workflows_per_s"].as_f64().unwrap_or(0.0),
        summary["tasks_per_s"].as_f64().unwrap_or(0.0),
        l["p50"].as_f64().unwrap_or(0.0),
        l["p90"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0),
        h["p50"].as_f64().unwrap_or(0.0),
        h["p99"].as_f64().unwrap_or(0.0),
        summary["control_cpu_seconds"].as_f64().unwrap_or(0.0),
        summary["failed"],
        summary["cpu_steal_percent"].as_f64().unwrap_or(0.0),
    );
    let (ra, rr) = (
        &summary["ready_to_assigned_ms"],
        &summary["result_to_next_ready_ms"],
    );
    if ra["samples"].as_u64().unwrap_or(0) > 0 {
        println!(
            "                 in the control unit (ms): ready → assigned p50 {:.0} p99 {:.0}; result → next ready p50 {:.0} p99 {:.0}",
            ra["p50"].as_f64().unwrap_or(0.0),
            ra["p99"].as_f64().unwrap_or(0.0),
            rr["p50"].as_f64().unwrap_or(0.0),
            rr["p99"].as_f64().unwrap_or(0.0),
        );
    }
    if summary["scenario"] == "priority" {
        let p = &summary["by_priority"];
        println!(
            "                 critical p50 {:.1} ms p99 {:.1} ms | low p50 {:.1} ms p99 {:.1} ms",
            p["critical"]["p50_ms"].as_f64().unwrap_or(0.0),
            p["critical"]["p99_ms"].as_f64().unwrap_or(0.0),
            p["low"]["p50_ms"].as_f64().unwrap_or(0.0),
            p["low"]["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
}
