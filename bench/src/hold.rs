//! Many workflows waiting: `--inflight N` workflows on a skill no agent offers, held by a
//! control unit of their own (the embedded store, real fsync). Measured: the time to
//! accept them, the memory they take (RSS before and after), the store on disk, and,
//! after the process is killed (SIGKILL, as a crash), the time until the restarted
//! control unit answers for the last of them, and its memory then.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::load::{Process, connect};
use crate::machine::status_kb;

const HOLD_SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: bench-hold\nversion: 1\ntasks:\n  - id: wait\n    skill: bench.hold\n";

/// Submissions in flight while accepting.
const SUBMITTERS: usize = 64;

/// `memory`: `--store memory` (which skips the restart) instead of `--data-dir DIR`;
/// `log_dir`: the embedded store's `--commit-log-dir`.
pub(crate) async fn hold(
    dir: &Path,
    memory: bool,
    log_dir: Option<&str>,
    count: usize,
) -> anyhow::Result<Value> {
    let data_dir = dir.join("hold").display().to_string();
    let active_max = (count + 1_000).to_string();
    let mut args = vec![
        "control",
        "--listen",
        "127.0.0.1:0",
        "--workflows-active-max",
        &active_max,
    ];
    if memory {
        args.extend(["--store", "memory"]);
    } else {
        args.extend(["--data-dir", &data_dir]);
    }
    if let Some(log_dir) = log_dir {
        args.extend(["--commit-log-dir", log_dir]);
    }
    let control = Process::start(&args)?;
    let channel = connect(&control.url).await?;
    // A first call, so the baseline includes the server's own warm-up.
    WorkflowsClient::new(channel.clone())
        .list_specs(pb::ListSpecsRequest::default())
        .await?;
    let before = status_kb(control.pid(), "VmRSS:");
    let started = Instant::now();
    let last = accept(channel, count).await?;
    let accept_s = started.elapsed().as_secs_f64();
    let after = status_kb(control.pid(), "VmRSS:");
    let mut report = json!({
        "workflows": count,
        "accept_s": accept_s,
        "accepted_per_s": count as f64 / accept_s.max(f64::EPSILON),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_workflow": (after.saturating_sub(before) * 1024) as f64 / count.max(1) as f64,
    });
    if memory {
        return Ok(report);
    }
    report["store_bytes"] = json!(dir_bytes(Path::new(&data_dir)));
    drop(control); // SIGKILL: recovery as after a crash
    let restarted_at = Instant::now();
    let control = Process::start(&args)?;
    let channel = connect(&control.url).await?;
    let mut client = WorkflowsClient::new(channel);
    loop {
        let answer = client
            .get(pb::GetWorkflowRequest {
                workflow_id: last.clone(),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(workflow) => {
                anyhow::ensure!(
                    workflow.get_ref().status() == pb::WorkflowStatus::Running,
                    "the held workflow {last} is {:?} after the restart",
                    workflow.get_ref().status()
                );
                break;
            }
            // Not recovered yet (the server listens before its scheduler is up).
            Err(_) if restarted_at.elapsed() < Duration::from_secs(1_800) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => anyhow::bail!("not recovered within 30 minutes: {status}"),
        }
    }
    report["recover_s"] = json!(restarted_at.elapsed().as_secs_f64());
    report["rss_recovered_kb"] = json!(status_kb(control.pid(), "VmRSS:"));
    Ok(report)
}

/// Submits `count` workflows; answers the last id accepted.
async fn accept(channel: Channel, count: usize) -> anyhow::Result<String> {
    let spec = Arc::new(HOLD_SPEC.to_owned());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SUBMITTERS {
        let (channel, spec, next) = (channel.clone(), spec.clone(), next.clone());
        workers.spawn(async move {
            let mut client = WorkflowsClient::new(channel);
            let mut last = (0, String::new());
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, anyhow::Error>(last);
                }
                let id = client
                    .submit(pb::SubmitRequest {
                        spec: Some(pb::submit_request::Spec::SpecText((*spec).clone())),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .workflow_id;
                last = (n, id);
            }
        });
    }
    let mut last = (0, String::new());
    while let Some(result) = workers.join_next().await {
        let mine = result??;
        if mine.0 >= last.0 {
            last = mine;
        }
    }
    Ok(last.1)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    })
}
