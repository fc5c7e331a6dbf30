//! The runtime with an agent in process: what a session does with its tasks.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::agent::{Role, SkillSpec};

/// An agent whose tasks succeed at once.
struct Quick;

#[async_trait::async_trait]
impl Agent for Quick {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "quick".into(),
            role: Role::Worker,
            version: "1".into(),
            skills: vec![SkillSpec {
                name: "test.quick".into(),
                description: "succeeds".into(),
                input_schema: serde_json::json!({"type": "object"}),
                output_schema: serde_json::json!({"type": "object"}),
                effect: SkillEffect::State,
            }],
            max_concurrency: 4,
            labels: Default::default(),
        }
    }

    async fn handle(&self, _task: Task) -> TaskOutcome {
        TaskOutcome::Succeeded(serde_json::json!({}))
    }
}

fn assignment(attempt: u32) -> (pb::Assignment, pb::TaskRef) {
    let task = pb::TaskRef {
        workflow_id: "wf-1".into(),
        task_index: 0,
        attempt,
    };
    let assignment = pb::Assignment {
        task: Some(task.clone()),
        task_id: "charge".into(),
        skill: "test.quick".into(),
        input_json: bytes::Bytes::from_static(b"{}"),
        idempotency_key: "wf-1:charge".into(),
        ..Default::default()
    };
    (assignment, task)
}

fn attempts(results: &[pb::TaskResult]) -> Vec<u32> {
    let mut attempts: Vec<u32> = results
        .iter()
        .filter_map(|r| r.task.as_ref().map(|t| t.attempt))
        .collect();
    attempts.sort_unstable();
    attempts
}

/// A task sends its result on the open session itself, with its slot's credit; when
/// that session ends before the loop booked the task, the next session's opening
/// frame carries the result again (it may have been lost with the session) and does
/// not list the task as running, and so does it for a task that ended between
/// sessions.
#[tokio::test]
async fn a_session_opens_with_the_results_of_tasks_that_ended_before_it() {
    let config = ExecutionUnitConfig::new("test", "http://127.0.0.1:1");
    let mut runner = AgentRunner::new(Arc::new(Quick), config);
    let (frames, mut written) = mpsc::channel(4);
    let state = Arc::new(OutboxState::default());
    runner.sessions = 1;
    runner.outbox = Some(Outbox {
        session: 1,
        frames,
        state: state.clone(),
    });
    let (first, task) = assignment(1);
    runner.start(first, task);
    runner.tasks.join_next().await.unwrap().unwrap();
    let sent = written.try_recv().unwrap();
    assert_eq!((attempts(&sent.results), sent.credits), (vec![1], 1));

    // The session ends; a second task ends before the next one opens.
    state.closed.store(true, Ordering::Release);
    runner.outbox = None;
    let (second, task) = assignment(2);
    runner.start(second, task);
    runner.tasks.join_next().await.unwrap().unwrap();
    assert!(
        written.try_recv().is_err(),
        "nothing more on the ended session"
    );

    let opening = runner.opening(false);
    assert_eq!(attempts(&opening.results), [1, 2]);
    assert!(opening.running.is_empty(), "{:?}", opening.running);
    assert_eq!(opening.credits, 4, "every slot is free");
}
