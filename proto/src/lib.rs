//! The `paygrid.v1` protocol: message types and tonic clients/servers generated at build
//! time by `tonic-prost-build` from `paygrid/v1/*.proto` (compiled by protox, so no protoc
//! binary is needed), and the encoded file descriptor set that gRPC reflection serves.
//!
//! Generated types stop at the gRPC edge: the control unit and the execution unit convert
//! them to domain types with `TryFrom`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("paygrid.v1");
}

impl v1::Operation {
    /// The operations as people and tools name them: `pause`, `resume`, `retry`,
    /// `cancel`, `redrive` (any case).
    pub const NAMES: &str = "pause, resume, retry, cancel or redrive";

    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_str_name(&format!("OPERATION_{}", name.trim().to_uppercase()))
            .filter(|operation| *operation != Self::Unspecified)
    }
}

/// The A2A protocol v1.0 (`lf.a2a.v1`), from the A2A project's vendored `a2a.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod a2a {
    tonic::include_proto!("lf.a2a.v1");
}

/// The googleapis annotations `a2a.proto` imports.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// The encoded `FileDescriptorSet` of `lf.a2a.v1`, for `tonic-reflection`.
pub const A2A_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/a2a_descriptor.bin"));

/// The encoded `FileDescriptorSet` of every `paygrid.v1` file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/paygrid_descriptor.bin"));

/// gRPC metadata key carrying the agent id on a `Session` call.
pub const AGENT_ID_METADATA: &str = "paygrid-agent-id";
/// gRPC metadata key carrying the session token on a `Session` call.
pub const SESSION_TOKEN_METADATA: &str = "paygrid-session-token";
