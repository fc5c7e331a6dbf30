//! The gRPC edge: the `Workflows` service for operators, the `AgentHub` service for
//! agents, errors turned into status codes here and nowhere else.
//!
//! - [`convert`]: domain ⇄ protobuf.
//! - `workflows`: Submit, Get, List, Cancel, Watch, Validate.
//! - `agents`: Register, Session, ListAgents.

mod agents;
pub mod convert;
mod workflows;

pub use agents::AgentHubService;
pub use workflows::{SpecRegistry, WorkflowsService};
