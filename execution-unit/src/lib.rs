//! The agent SDK and runtime.
//!
//! An agent implements [`Agent`]: it describes itself with an [`AgentCard`] and handles
//! one [`Task`] at a time per slot, answering with a [`TaskOutcome`]. An
//! [`ExecutionUnit`] hosts agents: for each it registers with the control unit, keeps one
//! session stream open, grants credits up to the agent's `max_concurrency`, heartbeats
//! running tasks, honours cancellations, reconnects with backoff when the control unit
//! goes away, and drains in-flight work on shutdown.
//!
//! - [`agent`]: the `Agent` trait and the types it sees.
//! - [`runtime`]: sessions, credits, heartbeats, drain.
//! - [`health`]: rolling health of hosted agents and their gateways, relayed by support agents.
//! - [`peer`]: asking other agents (their read-only skills) through the control unit.

pub mod agent;
pub mod health;
pub mod metric_names;
mod outbox;
pub mod peer;
pub mod runtime;

pub use agent::{Agent, AgentCard, Role, SkillEffect, SkillSpec, Task, TaskOutcome};
pub use health::HealthCollector;
pub use peer::{PeerError, PeerRequest, Peers};
pub use runtime::{ExecutionUnit, ExecutionUnitConfig};
