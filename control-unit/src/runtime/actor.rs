//! The loop: drain a batch of inputs, run the core, commit, then release what the batch
//! produced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agents::Agents;
use super::health::HealthView;
use super::persist::Persistence;
use super::release::{Release, UNRELEASED_MAX, durable_changed};
use super::watchers::Watchers;
use super::{
    BulkOutcome, IdempotencyIndex, Input, Operated, Operation, RuntimeConfig, Submission,
    Submitted, now_ms,
};
use crate::catalog::Catalog;
use crate::error::ControlError;
use crate::model::{AgentId, TaskStatus, WorkflowId, WorkflowStatus};
use crate::remediation::{LABEL_RULE, LABEL_SUBJECT, LABEL_TRIGGER, Remediation, Start};
use crate::scheduler::NewWorkflow;
use crate::scheduler::{AgentEvent, Command, Record, Scheduler, Workflow};
use crate::store::Store;
use crate::views::{Frame, HealthSnapshot, ListQuery, Page, WorkflowSummary, WorkflowView};

pub(super) struct Actor {
    /// In a cluster: changes when the owned partitions do. Subscribed before recovery,
    /// so a change during recovery (which read the set before it) restarts the actor.
    owned_watch: Option<tokio::sync::watch::Receiver<u64>>,
    pub(super) core: Scheduler,
    pub(super) config: RuntimeConfig,
    pub(super) agents: Agents,
    pub(super) watchers: Watchers,
    pub(super) health: HealthView,
    pub(super) persistence: Persistence,
    pub(super) idempotency: IdempotencyIndex,
    pub(super) catalog: Arc<Catalog>,
    /// The last change sequence handed out.
    pub(super) sequence: u64,
    /// What the core asked for since the last flush.
    pub(super) out: Vec<Command>,
    /// Answers held until the batch that produced them is durable.
    replies: Vec<Reply>,
    /// Audit records to write with the next group commit.
    audit: Vec<crate::audit::AuditRecord>,
    /// The audit log when there is no store.
    audit_memory: crate::audit::MemoryLog,
    /// Workflow, task and attempt spans, exported as the history ends them.
    pub(super) spans: crate::traces::SpanRecorder,
    /// Remediation rules and the runs in progress.
    pub(super) remediation: Remediation,
    /// Batches written and not yet durable, each with what it sends once it is, in the
    /// order they were written (with the embedded store: [`Actor::flush`]).
    pub(super) unreleased: std::collections::VecDeque<(u64, Release)>,
}

/// An answer held until the group commit.
/// Why an actor stopped.
pub(super) enum Stopped {
    Shutdown,
    /// Its partitions changed: the runtime starts a new actor from the store.
    Rebalance,
}

/// Resolves when the owned partitions change (never outside a cluster).
async fn owned_changed(watch: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match watch {
        Some(watch) => {
            if watch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

pub(super) enum Reply {
    Submit(
        oneshot::Sender<Result<Submitted, ControlError>>,
        Result<Submitted, ControlError>,
    ),
    Cancel(
        oneshot::Sender<Result<WorkflowStatus, ControlError>>,
        Result<WorkflowStatus, ControlError>,
    ),
    Approve(
        oneshot::Sender<Result<(String, WorkflowStatus), ControlError>>,
        Result<(String, WorkflowStatus), ControlError>,
    ),
    Operate(
        oneshot::Sender<Result<Operated, ControlError>>,
        Result<Operated, ControlError>,
    ),
    Bulk(oneshot::Sender<BulkOutcome>, BulkOutcome),
}

impl Reply {
    /// What came of the action (`ok`, `existing`, or the refusal), and the workflow it
    /// created or found.
    fn outcome(&self) -> (String, Option<String>) {
        match self {
            Self::Submit(_, Ok(submitted)) => (
                if submitted.created { "ok" } else { "existing" }.to_owned(),
                Some(submitted.id.to_string()),
            ),
            Self::Cancel(_, Ok(_)) | Self::Approve(_, Ok(_)) | Self::Operate(_, Ok(_)) => {
                ("ok".to_owned(), None)
            }
            Self::Submit(_, Err(error)) => (error.to_string(), None),
            Self::Cancel(_, Err(error)) => (error.to_string(), None),
            Self::Approve(_, Err(error)) => (error.to_string(), None),
            Self::Operate(_, Err(error)) => (error.to_string(), None),
            Self::Bulk(_, outcome) => (
                format!(
                    "{}{} matched, {} applied, {} refused",
                    if outcome.dry_run { "dry run: " } else { "" },
                    outcome.matched.len(),
                    outcome.applied,
                    outcome.refused.len()
                ),
                None,
            ),
        }
    }

    pub(super) fn send(self) {
        match self {
            Self::Submit(reply, result) => {
                let _ = reply.send(result);
            }
            Self::Cancel(reply, result) => {
                let _ = reply.send(result);
            }
            Self::Approve(reply, result) => {
                let _ = reply.send(result);
            }
            Self::Operate(reply, result) => {
                let _ = reply.send(result);
            }
            Self::Bulk(reply, outcome) => {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Everything `Get` shows of a workflow the core holds.
pub(super) fn view(core: &Scheduler, workflow: &Workflow) -> WorkflowView {
    let waiting = workflow
        .tasks
        .iter()
        .enumerate()
        .map(|(task, state)| match state.run.status {
            TaskStatus::Ready if workflow.paused.is_some() => format!(
                "workflow paused: {}",
                workflow.paused.as_deref().unwrap_or_default()
            ),
            // Ready: why no agent took it; running with no agent: a `waitFor`.
            TaskStatus::Ready | TaskStatus::Running if state.run.agent.is_none() => core
                .waiting_reason(crate::scheduler::Slot {
                    workflow: workflow.id,
                    task: task as u32,
                    compensation: false,
                }),
            _ => String::new(),
        })
        .collect();
    let approvals = core
        .pending_approvals(workflow.id)
        .into_iter()
        .map(|(task, pending)| (task, pending.clone()))
        .collect();
    WorkflowView {
        workflow: workflow.clone(),
        waiting,
        approvals,
    }
}

impl Actor {
    fn limits_view(&self) -> super::LimitsView {
        let limits = self.core.limits();
        super::LimitsView {
            source: limits.rules().source.clone(),
            concurrency_rules: limits.rules().concurrency.len(),
            rate_rules: limits.rules().rate.len(),
            running: limits.running(),
        }
    }

    pub(super) fn new(
        config: RuntimeConfig,
        store: Option<Arc<dyn Store>>,
        catalog: Arc<Catalog>,
    ) -> Self {
        let config_rules = config.remediation.clone();
        let ownership = config.ownership.clone();
        let owned_watch = ownership.as_ref().map(|o| {
            let mut watch = o.watch();
            watch.borrow_and_update();
            watch
        });
        Self {
            owned_watch,
            core: Scheduler::new(config.scheduler.clone()),
            watchers: Watchers::new(config.watchers_per_workflow_max),
            config,
            agents: Agents::default(),
            health: HealthView::default(),
            persistence: Persistence::new(store, ownership),
            idempotency: HashMap::new(),
            catalog,
            sequence: 0,
            out: Vec::with_capacity(1024),
            replies: Vec::new(),
            audit: Vec::new(),
            audit_memory: crate::audit::MemoryLog::default(),
            spans: crate::traces::SpanRecorder::default(),
            remediation: Remediation::new(config_rules),
            unreleased: std::collections::VecDeque::new(),
        }
    }

    /// Runs until shutdown, or until the partitions it owns change (in a cluster); gives
    /// the input channel back either way.
    pub(super) async fn run(
        self,
        mut receiver: mpsc::Receiver<Input>,
        shutdown: CancellationToken,
    ) -> (Result<Stopped, ControlError>, mpsc::Receiver<Input>) {
        let stopped = self.serve(&mut receiver, shutdown).await;
        (stopped, receiver)
    }

    async fn serve(
        mut self,
        receiver: &mut mpsc::Receiver<Input>,
        shutdown: CancellationToken,
    ) -> Result<Stopped, ControlError> {
        let mut ownership = self.owned_watch.take();
        let mut durable = self.persistence.durable_changes();
        let mut batch = Vec::with_capacity(self.config.batch_max);
        // Stale-authorization rules look at the running workflows now and then.
        let mut scan = self.config.remediation.scan_interval().map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        loop {
            let deadline = self
                .core
                .next_deadline()
                .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                received = receiver.recv_many(&mut batch, self.config.batch_max),
                    if self.unreleased.len() < UNRELEASED_MAX => {
                    if received == 0 {
                        break;
                    }
                    if !self.config.flush_interval.is_zero() && batch.len() < self.config.batch_max {
                        let wait = tokio::time::sleep(self.config.flush_interval);
                        tokio::pin!(wait);
                        while batch.len() < self.config.batch_max {
                            let room = self.config.batch_max - batch.len();
                            tokio::select! {
                                more = receiver.recv_many(&mut batch, room) => if more == 0 { break },
                                () = &mut wait => break,
                            }
                        }
                    }
                    for input in batch.drain(..) {
                        self.input(input);
                    }
                }
                () = sleep_until(deadline) => {
                    let mut out = std::mem::take(&mut self.out);
                    self.core.tick(now_ms(), &mut out);
                    self.out = out;
                }
                () = tick(&mut scan) => {
                    for start in self.remediation.scan(&self.core, now_ms()) {
                        self.start_remediation(&start);
                    }
                }
                // Batches became durable: what they hold goes out in the flush below.
                () = durable_changed(&mut durable, !self.unreleased.is_empty()) => {}
                () = shutdown.cancelled() => break,
                () = owned_changed(&mut ownership) => {
                    tracing::info!("partitions changed: starting again from the store");
                    self.settle()?;
                    return Ok(Stopped::Rebalance);
                }
            }
            // A flush may leave work for another (remediation started after a commit,
            // agents dropped for a full session): commit it now, not at the next input.
            let mut flushed = self.flush(!receiver.is_empty()).await;
            for _ in 0..4 {
                if flushed.is_err() || self.out.is_empty() {
                    break;
                }
                flushed = self.flush(!receiver.is_empty()).await;
            }
            if let Err(error) = flushed {
                if let crate::store::StoreError::Fenced(_)
                | crate::store::StoreError::Interrupted(_) = &error
                {
                    // Another member holds these partitions now, or the database ended a
                    // stalled commit: nothing of the batch was written, acknowledged or
                    // sent. Start again from the store.
                    tracing::warn!(%error, "commit refused; starting again from the store");
                    self.config
                        .metrics
                        .count(&crate::metric_names::FENCED_COMMITS, &[], 1);
                    return Ok(Stopped::Rebalance);
                }
                // Nothing from this batch was acknowledged or sent. Crash-only: stop
                // everything, and let the next start recover from the last durable commit.
                tracing::error!(%error, "group commit failed; stopping the control unit");
                shutdown.cancel();
                return Err(error.into());
            }
        }
        self.settle()?;
        tracing::info!("scheduler stopped");
        Ok(Stopped::Shutdown)
    }

    /// An action and its record: the record takes the action's outcome and goes into the
    /// same group commit.
    fn audited(&mut self, mut record: crate::audit::AuditRecord, input: Input) {
        let before = self.replies.len();
        self.input(input);
        record.outcome = "ok".to_owned();
        if let Some(reply) = self.replies.get(before) {
            let (outcome, target) = reply.outcome();
            record.outcome = outcome;
            if let Some(target) = target {
                record.target = target;
            }
        }
        if self.persistence.is_durable() {
            self.audit.push(record);
        } else {
            self.audit_memory.push(record);
        }
    }

    fn input(&mut self, input: Input) {
        let now = now_ms();
        let mut out = std::mem::take(&mut self.out);
        match input {
            Input::Submit { submission, reply } => {
                let result = self.submit(now, *submission, &mut out);
                self.replies.push(Reply::Submit(reply, result));
            }
            Input::Cancel { id, reason, reply } => {
                let result = self
                    .core
                    .cancel(now, id, &reason, &mut out)
                    .map_err(ControlError::from);
                self.replies.push(Reply::Cancel(reply, result));
            }
            Input::Approve {
                id,
                task,
                decision,
                reply,
            } => {
                let result = self
                    .core
                    .decide(now, id, task.as_deref(), decision, &mut out)
                    .map(|task| {
                        let status = self
                            .core
                            .workflow(id)
                            .map_or(WorkflowStatus::Running, |w| w.status);
                        (task, status)
                    })
                    .map_err(ControlError::from);
                self.replies.push(Reply::Approve(reply, result));
            }
            Input::FindKey { key, reply } => {
                let _ = reply.send(self.idempotency.get(&key).map(|(id, _)| *id));
            }
            Input::Operate {
                id,
                operation,
                reply,
            } => {
                let result = self.operate(now, id, operation, &mut out);
                self.replies.push(Reply::Operate(reply, result));
            }
            Input::Bulk {
                filter,
                operation,
                dry_run,
                limit,
                reply,
            } => {
                let mut outcome = BulkOutcome {
                    matched: self
                        .core
                        .workflows()
                        .filter(|w| self.core.matches(w, &filter))
                        .map(|w| w.id)
                        .take(limit)
                        .collect(),
                    dry_run,
                    ..BulkOutcome::default()
                };
                if !dry_run {
                    for &id in &outcome.matched {
                        match self.operate(now, id, operation.clone(), &mut out) {
                            Ok(_) => outcome.applied += 1,
                            Err(error) => outcome.refused.push(format!("{id}: {error}")),
                        }
                    }
                }
                self.replies.push(Reply::Bulk(reply, outcome));
            }
            Input::SetLimits { rules, reply } => {
                self.core.set_limits(now, rules);
                let _ = reply.send(self.limits_view());
            }
            Input::Audited { record, input } => {
                // The action takes and gives back `out` itself.
                self.out = std::mem::take(&mut out);
                self.audited(*record, *input);
                out = std::mem::take(&mut self.out);
            }
            Input::ListAudit { query, reply } => {
                let _ = reply.send(self.audit_memory.list(&query));
            }
            Input::GetLimits { reply } => {
                let _ = reply.send(self.limits_view());
            }
            Input::Get { id, reply } => {
                let _ = reply.send(self.core.workflow(id).map(|w| view(&self.core, w)));
            }
            Input::List { query, reply } => {
                let _ = reply.send(self.list(&query));
            }
            Input::Watch { id, sender, reply } => {
                let _ = reply.send(self.watchers.watch(&self.core, id, sender));
            }
            Input::Follow { ids, follower } => self.watchers.follow(&self.core, ids, &follower),
            Input::Register {
                card,
                execution_unit,
                reply,
            } => {
                let _ = reply.send(
                    self.agents
                        .register(now, card, execution_unit, &self.config),
                );
            }
            Input::OpenSession {
                agent,
                token,
                sender,
                reply,
            } => {
                let opened = self.agents.open_session(agent, &token, sender);
                let reply_value = opened.map(|(session, joined, card)| {
                    self.core.handle(now, joined, &mut out);
                    self.config
                        .metrics
                        .count(&crate::metric_names::AGENT_SESSIONS_OPENED, &[], 1);
                    (session, card)
                });
                let _ = reply.send(reply_value);
            }
            Input::CloseSession { agent, session } => {
                if self.agents.close_session(&agent, session) {
                    self.core.handle(now, AgentEvent::Left { agent }, &mut out);
                }
            }
            Input::Agent(events) => {
                for event in events {
                    self.core.handle(now, event, &mut out);
                }
            }
            Input::HealthReports { agent, reports } => {
                let reported_by = self
                    .agents
                    .execution_unit(&agent)
                    .map_or_else(|| agent.to_string(), str::to_owned);
                self.health
                    .report(now, &reported_by, reports, &mut self.core, &mut out);
            }
            Input::HealthView { reply } => {
                let _ = reply.send(HealthSnapshot {
                    entries: self.health.entries(),
                    breakers: super::health::breakers(&self.core, now),
                    adaptive: super::health::adaptive(&self.core),
                    holds: self.core.holds().clone(),
                });
            }
            Input::DrainGateway {
                gateway,
                for_ms,
                reason,
                reply,
            } => {
                self.core
                    .drain_gateway(now, &gateway, for_ms, &reason, &mut out);
                let _ = reply.send(super::health::breaker(&self.core, &gateway, now));
            }
            Input::Hold { on, reason, reply } => {
                let mut holds = self.core.holds().clone();
                holds.set(&on, reason.as_deref());
                self.core.set_holds(now, holds.clone());
                let _ = reply.send(holds);
            }
            Input::ForgetKeys(keys) => {
                for key in keys {
                    self.idempotency.remove(&key);
                }
            }
            Input::Metrics { reply } => {
                super::observe::refresh_gauges(
                    &self.config.metrics,
                    &self.core,
                    self.agents.connected(),
                );
                let _ = reply.send(());
            }
            Input::ListAgents { skill, reply } => {
                let _ = reply.send(self.agents.list(&self.core, &self.health, skill.as_deref()));
            }
        }
        self.out = out;
    }

    fn submit(
        &mut self,
        now: u64,
        submission: Submission,
        out: &mut Vec<Command>,
    ) -> Result<Submitted, ControlError> {
        let key = submission.new.idempotency_key.clone();
        if let Some(key) = &key
            && let Some((existing, fingerprint)) = self.idempotency.get(key)
        {
            if *fingerprint != submission.fingerprint {
                return Err(ControlError::KeyReused {
                    key: key.clone(),
                    existing: *existing,
                });
            }
            let status = self.core.workflow(*existing).map(|w| w.status);
            return Ok(Submitted {
                id: *existing,
                created: false,
                status,
            });
        }
        let id = submission.new.id;
        self.core.submit(now, submission.new, out)?;
        if let Some(key) = key {
            self.idempotency.insert(key, (id, submission.fingerprint));
        }
        tracing::debug!(workflow = %id, "workflow submitted");
        Ok(Submitted {
            id,
            created: true,
            status: Some(WorkflowStatus::Running),
        })
    }

    /// A page of the workflows in memory.
    /// One operator operation on one workflow; its changes go into `out`.
    fn operate(
        &mut self,
        now: u64,
        id: WorkflowId,
        operation: Operation,
        out: &mut Vec<Command>,
    ) -> Result<Operated, ControlError> {
        let tasks = match operation {
            Operation::Pause { reason } => {
                self.core.pause(now, id, &reason, out)?;
                Vec::new()
            }
            Operation::Resume => {
                self.core.resume(now, id, out)?;
                Vec::new()
            }
            Operation::Retry { task } => self.core.retry(now, id, task.as_deref(), out)?,
            Operation::Redrive { checkpoint } => self.core.redrive(now, id, &checkpoint, out)?,
            Operation::Cancel { reason } => {
                self.core.cancel(now, id, &reason, out)?;
                Vec::new()
            }
        };
        let workflow = self.core.workflow(id);
        Ok(Operated {
            status: workflow.map_or(WorkflowStatus::Cancelled, |w| w.status),
            tasks,
            paused: workflow.is_some_and(|w| w.paused.is_some()),
        })
    }

    fn list(&self, query: &ListQuery) -> Page {
        let mut workflows = Vec::new();
        for workflow in self.core.workflows_after(query.after) {
            if workflows.len() == query.page_size {
                break;
            }
            let summary = WorkflowSummary::of(workflow);
            if query.matches(&summary) {
                workflows.push(summary);
            }
        }
        let next = if workflows.len() == query.page_size {
            workflows.last().map(|w| w.id)
        } else {
            None
        };
        Page { workflows, next }
    }

    /// Commits what the batch changed (group commit), and sends what the core asked for
    /// (one frame per agent, events to watchers, the held answers) once it is durable:
    /// at once with a store that commits before it returns; with the embedded store,
    /// which writes the batch and syncs it on a syncer's thread, when the syncers say so
    /// ([`Actor::release_durable`]), while the actor goes on deciding the next batches.
    /// Batches become durable in the order they were written, and nothing leaves before
    /// its batch and every batch before it are durable.
    async fn flush(&mut self, busy: bool) -> Result<(), crate::store::StoreError> {
        self.release_durable()?;
        let mut out = std::mem::take(&mut self.out);
        self.core.dispatch(now_ms(), &mut out);
        let mut records: Vec<(u64, Record)> = Vec::new();
        let mut frames: HashMap<AgentId, Frame> = HashMap::new();
        let mut transitions = Vec::new();
        for command in out.drain(..) {
            match command {
                Command::Dispatch { agent, assignment } => {
                    frames
                        .entry(agent)
                        .or_default()
                        .assignments
                        .push(*assignment);
                }
                Command::Cancel {
                    agent,
                    slot,
                    attempt,
                } => {
                    frames
                        .entry(agent)
                        .or_default()
                        .cancellations
                        .push((slot, attempt));
                }
                Command::Record(record) => {
                    self.sequence += 1;
                    records.push((self.sequence, record));
                }
                Command::Breaker(transition) => transitions.push(transition),
                Command::DrainAcknowledged { agent } => {
                    frames.entry(agent).or_default().drain_acknowledged = true;
                }
            }
        }
        self.out = out;
        let mut written = None;
        if self.persistence.is_durable() {
            let mut batch =
                self.persistence
                    .batch(&self.core, &self.idempotency, &records, self.sequence);
            batch.audit = std::mem::take(&mut self.audit);
            written = self.persistence.write(batch, busy).await?;
        }
        let exporting = paygrid_telemetry::otel::exporting();
        let mut reconciled = Vec::new();
        for (sequence, record) in &records {
            super::observe::observe(&self.config.metrics, &self.core, record);
            if exporting && let Some(workflow) = self.core.workflow(record.workflow) {
                self.spans.record(record, workflow);
            }
            if let Some(summary) = super::observe::reconciliation(&self.core, record) {
                reconciled.push(summary);
            }
            self.watchers.notify(&self.core, *sequence, record);
        }
        self.watchers.after_commit(&self.core, self.sequence);
        for summary in &reconciled {
            summary.observe(&self.config.metrics);
            for start in self.remediation.on_reconciled(summary, &self.core) {
                self.start_remediation(&start);
            }
        }
        for transition in &transitions {
            super::observe::breaker_changed(&self.config.metrics, transition);
            for start in self.remediation.on_breaker(transition, &self.core) {
                self.start_remediation(&start);
            }
        }
        let release = Release {
            frames,
            replies: std::mem::take(&mut self.replies),
            events: self.watchers.take_outbox(),
        };
        match written {
            // Durable as the commit returned (a store without a committer here: then
            // every batch is, and none waits in `unreleased`).
            None => self.release(release),
            Some(_) if release.is_empty() => {}
            Some(written) => self.unreleased.push_back((written, release)),
        }
        // Durable while the batch was decided (a syncer ended meanwhile).
        self.release_durable()
    }
}

impl Actor {
    /// Starts a remediation workflow like a submission (committed with the next flush),
    /// labelled with its trigger, rule and subject.
    fn start_remediation(&mut self, start: &Start) {
        let Some(spec) = self.catalog.cached(&start.spec_ref) else {
            tracing::error!(rule = %start.rule, spec = %start.spec_ref, "remediation spec is not in the catalog: submit it");
            return;
        };
        let input = match spec.check_input(&start.input, &self.catalog.limits) {
            Ok(input) => input,
            Err(error) => {
                tracing::error!(rule = %start.rule, %error, "remediation input does not match its spec");
                return;
            }
        };
        let labels: std::collections::BTreeMap<String, String> = [
            (LABEL_TRIGGER, start.trigger.as_str()),
            (LABEL_RULE, start.rule.as_str()),
            (LABEL_SUBJECT, start.subject.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let now = now_ms();
        let submission = Submission {
            fingerprint: super::fingerprint(&spec.hash, &input, spec.priority, &labels),
            new: NewWorkflow {
                id: WorkflowId::generate(now),
                priority: spec.priority,
                spec,
                input,
                labels,
                idempotency_key: Some(start.key.clone()),
                traceparent: paygrid_telemetry::context::TraceParent::new_root().to_string(),
                trace_parent_span: String::new(),
                tracestate: String::new(),
            },
        };
        let mut out = std::mem::take(&mut self.out);
        let submitted = self.submit(now, submission, &mut out);
        self.out = out;
        match submitted {
            Ok(submitted) => {
                tracing::warn!(rule = %start.rule, subject = %start.subject, workflow = %submitted.id, "remediation started");
                self.remediation.started(start, submitted.id);
            }
            Err(error) => {
                tracing::error!(rule = %start.rule, %error, "remediation could not start");
            }
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
