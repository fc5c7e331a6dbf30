//! The gRPC edge: the `Workflows` service for operators, the `AgentHub` service for
//! agents.
//!
//! - [`convert`]: domain ⇄ protobuf, the one place they meet.
//! - `status`: every `ControlError` as a gRPC status, the one place codes are chosen.
//! - `workflows`: Submit, Get, List, Cancel, Watch, Validate.
//! - `follow`: Follow, one completion stream for many workflows.
//! - `agents`: Register, Session, ListAgents, Health, DrainGateway.
//! - `peers`: peer messages between agents, routed over their sessions.
//! - `tools`: ListTools, CallTool (behind `AgentHub`).
//! - `access`: who may call what (certificates, tokens, roles), checked before any service.
//! - `a2a`: the A2A v1.0 gRPC binding and agent card over workflows and tools.

pub mod a2a;
pub mod access;
pub mod agents;
pub mod convert;
mod follow;
mod operations;
pub mod peers;
mod status;
pub mod tools;
pub mod workflows;

pub use agents::AgentHubService;
pub use workflows::WorkflowsService;
