//! `paygrid store-bench`: append throughput of a store, with group commit and with one
//! commit (fsync) per event. Events look like the scheduler's (a task change with a gateway
//! output, as the stored record `store::records` writes).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use paygrid_control_unit::model::{TaskStatus, WorkflowId};
use paygrid_control_unit::scheduler::Change;
use paygrid_control_unit::store::{self, Batch, EventWrite, Store};

fn events(count: usize, first_sequence: u64) -> Vec<EventWrite> {
    let change = Change::Task {
        task: 3,
        compensation: false,
        status: TaskStatus::Succeeded,
        attempt: 1,
        agent: Some(paygrid_control_unit::model::AgentId(Arc::from(
            "gateway-alpha-1",
        ))),
        detail: None,
        output: Some(Arc::from(
            r#"{"authorization_id":"auth_alpha_12345","status":"authorized","amount_minor":1250,"currency":"EUR","gateway":"alpha"}"#,
        )),
        retry_at: None,
        deadline: None,
        outcome: Some(paygrid_control_unit::scheduler::AttemptOutcome::Succeeded),
        lookups: 0,
        settling: false,
    };
    let bytes = paygrid_control_unit::store::records::encode_change(&change);
    (0..count)
        .map(|i| EventWrite {
            workflow: WorkflowId::generate(1_700_000_000_000 + (i / 7) as u64),
            sequence: first_sequence + i as u64,
            at: 1_700_000_000_000,
            change: bytes.clone(),
        })
        .collect()
}

async fn append(
    store: &Arc<dyn Store>,
    events: Vec<EventWrite>,
    batch: usize,
) -> anyhow::Result<f64> {
    let count = events.len();
    let started = Instant::now();
    let mut events = events.into_iter();
    loop {
        let chunk: Vec<EventWrite> = events.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        store
            .commit(Batch {
                events: chunk,
                ..Batch::default()
            })
            .await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(
    location: &str,
    count: usize,
    batch: usize,
    single: usize,
    json: bool,
) -> anyhow::Result<()> {
    let store = store::open(location)
        .await
        .with_context(|| format!("open store {location}"))?;
    let base = store.recover(0).await?.last_sequence + 1;
    let grouped = append(&store, events(count, base), batch.max(1)).await?;
    let one_by_one = append(&store, events(single, base + count as u64), 1).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"store": location, "events": count, "batch": batch, "group_commit_events_per_s": grouped.round(), "single_commit_events": single, "single_commit_events_per_s": one_by_one.round()})
        );
    } else {
        println!("store {location}");
        println!(
            "  group commit ({batch} events per commit): {grouped:>10.0} events/s over {count} events"
        );
        println!(
            "  one commit (fsync) per event:           {one_by_one:>10.0} events/s over {single} events"
        );
    }
    Ok(())
}
