//! The stored format: every record reads back as written, and every older format reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use proptest::prelude::*;

use super::*;
use crate::scheduler::{NewWorkflow, Scheduler, SchedulerConfig};
use crate::spec::{SpecLimits, compile};

const SPEC: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: stored\nversion: 3\ntasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    needs: [a]\n";

/// A workflow with every optional part of its state set.
fn full_workflow() -> Workflow {
    let spec = Arc::new(compile(SPEC, &SpecLimits::default()).unwrap());
    let mut core = Scheduler::new(SchedulerConfig::default());
    let created = 1_796_288_774_778;
    let id = WorkflowId::generate(created);
    core.submit(
        created,
        NewWorkflow {
            id,
            spec,
            input: serde_json::json!({"amount_minor": 1250, "currency": "EUR", "note": "é\"x"}),
            priority: Priority::High,
            labels: BTreeMap::from([("merchant".into(), "m-1".into())]),
            idempotency_key: Some("order-7".into()),
            traceparent: "00-35491a7193a792a6954b4571135c7581-73b72b5c86382987-01".into(),
            trace_parent_span: "73b72b5c86382987".into(),
            tracestate: "vendor=1".into(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    let mut workflow = core.workflow(id).unwrap().clone();
    workflow.status = WorkflowStatus::Compensating;
    workflow.error = Some("capture declined".into());
    workflow.updated_at = created + 2_500;
    workflow.cancel_requested = true;
    workflow.paused = Some("ops: incident 12".into());
    workflow.compensation_failures = 1;
    workflow.compensation_stack = vec![0];
    workflow.compensating = Some(0);
    let run = &mut workflow.tasks[0].run;
    run.status = TaskStatus::Succeeded;
    run.attempt = 3;
    run.lookups = 1;
    run.attempts_before = 1;
    run.generation = 2;
    run.settling = true;
    run.agent = Some(AgentId(Arc::from("worker-1")));
    run.started_at = created + 1;
    run.finished_at = created + 900;
    run.attempt_started_at = created + 700;
    run.ready_at = created + 650;
    run.deadline = created + 30_000;
    run.lease_until = created + 10_000;
    // Before the workflow's creation: a clock that went back is stored exactly.
    run.retry_at = created - 5;
    run.output = Some(Arc::from(r#"{"auth_id":"a-1"}"#));
    run.error = Some("timeout".into());
    run.history = vec![
        AttemptRecord {
            attempt: 1,
            agent: Some(AgentId(Arc::from("worker-2"))),
            started_at: created + 1,
            finished_at: created + 300,
            outcome: AttemptOutcome::Timeout,
            error: Some("no answer".into()),
            lookup: false,
        },
        AttemptRecord {
            attempt: 2,
            agent: None,
            started_at: created + 400,
            finished_at: created + 600,
            outcome: AttemptOutcome::Unknown,
            error: None,
            lookup: true,
        },
    ];
    let mut compensation = Execution::new(TaskStatus::Failed);
    compensation.attempt = 1;
    compensation.started_at = created + 2_000;
    compensation.history.push(AttemptRecord {
        attempt: 1,
        agent: Some(AgentId(Arc::from("worker-1"))),
        started_at: created + 2_000,
        finished_at: created + 2_400,
        outcome: AttemptOutcome::Permanent,
        error: Some("void refused".into()),
        lookup: false,
    });
    workflow.tasks[0].compensation = Some(Box::new(compensation));
    workflow
}

/// A format-2 snapshot reads back as the snapshot the workflow gives, every field, and
/// takes under half the bytes of its JSON.
#[test]
fn a_snapshot_reads_back_whole() {
    let workflow = full_workflow();
    let record = encode_snapshot(&workflow);
    assert_eq!(record[0], PROTOBUF);
    let read = decode_snapshot(&record).unwrap();
    let expected = workflow.snapshot();
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&expected).unwrap()
    );
    let json = serde_json::to_vec(&expected).unwrap();
    assert!(
        record.len() * 2 < json.len(),
        "{} bytes as a record, {} as JSON",
        record.len(),
        json.len()
    );
}

/// A damaged record is an error naming what is wrong, not a panic.
#[test]
fn a_damaged_record_is_an_error() {
    let record = encode_snapshot(&full_workflow());
    for cut in [2, record.len() / 2, record.len() - 1] {
        assert!(matches!(
            decode_snapshot(&record[..cut]),
            Err(StoreError::Corrupt(_))
        ));
    }
    let change = encode_change(&Change::Workflow {
        status: WorkflowStatus::Failed,
        detail: Some("x".into()),
    });
    assert!(matches!(
        decode_change(&change[..change.len() - 1]),
        Err(StoreError::Corrupt(_))
    ));
    // An unknown status code (written by a newer version) is named.
    let unknown = [PROTOBUF, 0x12, 0x02, 0x08, 0x63];
    match decode_change(&unknown) {
        Err(StoreError::Corrupt(why)) => {
            assert!(why.contains("workflow status code 99"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

/// Rows written before absent values were left out (explicit `null`s) still read, and
/// JSON rows written before format 2 read back the same as the record of the change.
#[test]
fn changes_read_in_every_format() {
    let stored = br#"{"kind":"task","task":0,"compensation":false,"status":"ready","attempt":0,"agent":null,"detail":null,"output":null,"retry_at":null}"#;
    let change = decode_change(stored).expect("an older row reads");
    let Change::Task {
        status,
        agent,
        output,
        ..
    } = &change
    else {
        panic!("a task change: {change:?}");
    };
    assert_eq!(*status, TaskStatus::Ready);
    assert!(agent.is_none() && output.is_none());
    let record = encode_change(&change);
    assert_eq!(record[0], PROTOBUF);
    assert!(record.len() * 4 < stored.len());
    assert_eq!(decode_change(&record).unwrap(), change);
    let ended = br#"{"kind":"workflow","status":"succeeded","detail":null}"#;
    assert_eq!(
        decode_change(ended).unwrap(),
        Change::Workflow {
            status: WorkflowStatus::Succeeded,
            detail: None
        }
    );
}

/// A snapshot reads back whether stored as JSON (before migration 5, and in
/// PostgreSQL before format 2), compressed (format 1) or as a record.
#[test]
fn snapshots_read_in_every_format() {
    let workflow = full_workflow();
    let json = serde_json::to_vec(&workflow.snapshot()).unwrap();
    let compressed = compress_snapshot_json(&json);
    let record = encode_snapshot(&workflow);
    let as_value = |bytes: &[u8]| serde_json::to_value(decode_snapshot(bytes).unwrap()).unwrap();
    assert_eq!(as_value(&json), as_value(&record));
    assert_eq!(as_value(&compressed), as_value(&record));
    assert!(matches!(
        decode_snapshot(&compressed[..compressed.len() / 2]),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn every_enum_value_has_a_code_and_reads_back() {
    for (code_of, status) in WORKFLOW_STATUSES.iter().enumerate() {
        assert_eq!(code(&WORKFLOW_STATUSES, *status), code_of as u32);
    }
    for status in TASK_STATUSES {
        let code = code(&TASK_STATUSES, status);
        assert_eq!(value(&TASK_STATUSES, code, "t").unwrap(), status);
    }
    for outcome in ATTEMPT_OUTCOMES {
        let code = code(&ATTEMPT_OUTCOMES, outcome);
        assert_eq!(value(&ATTEMPT_OUTCOMES, code, "o").unwrap(), outcome);
    }
    for p in Priority::ALL {
        assert_eq!(priority(priority_code(p)).unwrap(), p);
    }
}

fn any_change() -> impl Strategy<Value = Change> {
    let text = proptest::option::of("[a-z0-9 \"é{}:]{0,12}");
    let task = (
        (
            0u32..64,
            any::<bool>(),
            0usize..TASK_STATUSES.len(),
            any::<u32>(),
        ),
        (
            proptest::option::of("[a-z0-9-]{1,10}"),
            text.clone(),
            text.clone(),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0usize..ATTEMPT_OUTCOMES.len()),
            any::<u32>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (task, compensation, status, attempt),
                (agent, detail, output),
                (retry_at, deadline, outcome, lookups, settling),
            )| Change::Task {
                task,
                compensation,
                status: TASK_STATUSES[status],
                attempt,
                agent: agent.map(|a| AgentId(Arc::from(a))),
                detail,
                output: output.map(Arc::from),
                retry_at,
                deadline,
                outcome: outcome.map(|o| ATTEMPT_OUTCOMES[o]),
                lookups,
                settling,
            },
        );
    prop_oneof![
        Just(Change::Created),
        Just(Change::Resumed),
        (0usize..WORKFLOW_STATUSES.len(), text.clone()).prop_map(|(s, detail)| {
            Change::Workflow {
                status: WORKFLOW_STATUSES[s],
                detail,
            }
        }),
        "[a-z ]{0,16}".prop_map(|reason| Change::CancelRequested { reason }),
        "[a-z ]{0,16}".prop_map(|reason| Change::Paused { reason }),
        (
            proptest::collection::vec(0u32..64, 0..5),
            proptest::collection::vec(0u32..64, 0..5)
        )
            .prop_map(|(tasks, new_keys)| Change::Reopened(Reset { tasks, new_keys })),
        task,
    ]
}

proptest! {
    /// Every change reads back as it was written, and its JSON (an older row) reads
    /// back the same.
    #[test]
    fn every_change_reads_back(change in any_change()) {
        prop_assert_eq!(&decode_change(&encode_change(&change)).unwrap(), &change);
        let json = serde_json::to_vec(&change).unwrap();
        prop_assert_eq!(&decode_change(&json).unwrap(), &change);
    }

    /// A timestamp relative to any base reads back exactly; 0 stays "not yet".
    #[test]
    fn timestamps_read_back_from_any_base(base in any::<u64>(), at in any::<u64>()) {
        prop_assert_eq!(absolute(base, relative(base, at)), at);
        prop_assert_eq!(relative(base, 0), None);
    }
}
