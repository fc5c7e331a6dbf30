//! The control unit: turns submitted workflow specs into workflows, schedules their
//! tasks by priority and capacity, and hands them to agents over gRPC.
//!
//! - [`model`]: ids, priorities, statuses.
//! - [`spec`]: parsing, validation and compilation of workflow specs.
//! - [`scheduler`]: the pure scheduler core (events in, commands out, time as an input).
//! - [`runtime`]: the actor that owns the core and talks to the services.
//! - [`service`]: the `Workflows` and `AgentHub` gRPC services.
//! - [`server`]: serving both, with gRPC health and reflection.
pub mod model;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
pub mod traces;
