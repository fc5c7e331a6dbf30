//! The control unit: turns submitted workflow specs into workflows, schedules their
//! tasks by priority and capacity, and hands them to agents over gRPC.
//!
//! - [`model`]: ids, priorities, statuses, agent cards, health reports.
//! - [`views`]: read models the actor and the catalog answer with.
//! - [`error`]: the one error type below the gRPC edge.
//! - [`catalog`]: specs by `name@version` (durable, immutable), skills, stored workflows.
//! - [`spec`]: parsing, validation and compilation of workflow specs.
//! - [`scheduler`]: the pure scheduler core (events in, commands out, time as an input).
//! - [`runtime`]: the actor that owns the core and talks to the services, in domain types.
//! - [`service`]: the `Workflows` and `AgentHub` gRPC services: protobuf meets the domain
//!   in `service::convert`, errors become status codes in `service::status`.
//! - [`metric_names`]: every metric's name and help text.
//! - [`remediation`]: rules that start remediation workflows (a breaker opened).
//! - [`server`]: serving both, with gRPC health and reflection.
pub mod audit;
pub mod catalog;
pub mod cluster;
pub mod error;
pub mod metric_names;
pub mod model;
pub mod priority;
pub mod reconciliation;
pub mod remediation;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
pub mod tools;
pub mod traces;
pub mod views;
