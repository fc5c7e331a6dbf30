//! The control unit: turns submitted workflow specs into workflows, schedules their
//! tasks by priority and capacity, and hands them to agents over gRPC.
//!
//! - [`model`]: ids, priorities, statuses.
//! - [`spec`]: parsing, validation and compilation of workflow specs.
//! - [`scheduler`]: the pure scheduler core (events in, commands out, time as an input).
pub mod model;
pub mod spec;
pub mod scheduler;
