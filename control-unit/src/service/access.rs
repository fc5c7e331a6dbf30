//! Who may call what: every gRPC call is authenticated (client certificate or bearer
//! token) and checked against the role its method needs before any service sees it. The
//! caller goes on in the request's extensions, for the audit log and for `Register`,
//! which checks each skill of the card against what the caller may offer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use paygrid_security::PeerInfo;
use paygrid_security::policy::{Caller, Policy, Role};
use tonic::Status;

use crate::error::ControlError;

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health checks: load balancers and orchestrators probe without credentials.
    Nothing,
    Role(Role),
    /// An agent identity: one the policy lets offer skills.
    Agent,
    /// Anyone authenticated (the cluster's directory: no workflow data in it).
    Caller,
}

/// The need of each method, by its gRPC path. Unknown methods need `admin`.
pub fn needed(path: &str) -> Need {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    use Need::{Agent, Nothing, Role as R};
    match (service, method) {
        ("grpc.health.v1.Health", _) => Nothing,
        (service, _) if service.starts_with("grpc.reflection.") => R(Role::Viewer),
        (
            "paygrid.v1.Workflows",
            "Submit" | "Cancel" | "Approve" | "Pause" | "Resume" | "RetryTask" | "Redrive"
            | "BulkOperate",
        ) => R(Role::Operator),
        ("paygrid.v1.Workflows", "ListAudit") => R(Role::Admin),
        ("paygrid.v1.Workflows", _) => R(Role::Viewer),
        ("paygrid.v1.AgentHub", "Register" | "Session") => Agent,
        ("paygrid.v1.AgentHub", "ListMembers") => Need::Caller,
        (
            "paygrid.v1.AgentHub",
            "CallTool" | "SetLimits" | "DrainGateway" | "PauseDispatch" | "ResumeDispatch",
        ) => R(Role::Operator),
        ("paygrid.v1.AgentHub", "ListAgents" | "Health" | "ListTools" | "GetLimits") => {
            R(Role::Viewer)
        }
        (
            "lf.a2a.v1.A2AService",
            "GetTask" | "ListTasks" | "SubscribeToTask" | "GetExtendedAgentCard",
        ) => R(Role::Viewer),
        ("lf.a2a.v1.A2AService", _) => R(Role::Operator),
        _ => R(Role::Admin),
    }
}

/// Checks a call: the caller, or the status that refuses it.
/// A call another cluster member forwarded (its `forwarded` header, see
/// [`paygrid_security::policy::FORWARDED_FOR`]) is checked as the caller that member
/// authenticated, when the direct peer proved it is a member.
pub fn check(
    policy: &Policy,
    path: &str,
    peer: Option<&PeerInfo>,
    authorization: Option<&str>,
    forwarded: Option<&str>,
) -> Result<Option<Caller>, ControlError> {
    let need = needed(path);
    if need == Need::Nothing {
        return Ok(None);
    }
    let mut caller = policy
        .authenticate(peer, authorization, paygrid_security::token::now_secs())
        .map_err(|e| ControlError::Unauthenticated(e.to_string()))?;
    if let Some(header) = forwarded {
        caller = caller.forwarded(header).ok_or_else(|| {
            ControlError::PermissionDenied(format!(
                "{} may not forward calls: only cluster members (the node certificate) may",
                caller.describe()
            ))
        })?;
    }
    let method = path.trim_start_matches('/');
    match need {
        Need::Nothing => {}
        Need::Role(role) if !caller.may(role) => {
            return Err(ControlError::PermissionDenied(format!(
                "{} may not call {method}: it needs the `{}` role and has {}",
                caller.describe(),
                role.name(),
                caller
                    .role
                    .map_or("none".to_owned(), |r| format!("`{}`", r.name())),
            )));
        }
        Need::Role(_) => {}
        Need::Agent if caller.skills.is_empty() => {
            return Err(ControlError::PermissionDenied(format!(
                "{} may not connect agents: the access policy lets it offer no skills",
                caller.describe()
            )));
        }
        Need::Agent | Need::Caller => {}
    }
    Ok(Some(caller))
}

/// The caller a checked request carries (`None` only on unchecked paths).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// The tower layer that runs [`check`] on every call.
#[derive(Clone)]
pub struct AccessLayer {
    policy: Arc<Policy>,
    metrics: Arc<paygrid_telemetry::metrics::Registry>,
}

impl AccessLayer {
    pub fn new(policy: Arc<Policy>, metrics: Arc<paygrid_telemetry::metrics::Registry>) -> Self {
        Self { policy, metrics }
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = Access<S>;
    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    layer: AccessLayer,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Access<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let checked = check(
            &self.layer.policy,
            request.uri().path(),
            request.extensions().get::<PeerInfo>(),
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            request
                .headers()
                .get(paygrid_security::policy::FORWARDED_FOR)
                .and_then(|v| v.to_str().ok()),
        );
        match checked {
            Ok(caller) => {
                // The clone is ready-checked the same way tower's examples do it.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                match caller {
                    Some(caller) => {
                        request.extensions_mut().insert(caller.clone());
                        // Audit records of what this call does name its caller.
                        Box::pin(crate::audit::scope(caller, inner.call(request)))
                    }
                    None => Box::pin(inner.call(request)),
                }
            }
            Err(error) => {
                let reason = match error {
                    ControlError::Unauthenticated(_) => "unauthenticated",
                    _ => "permission_denied",
                };
                self.layer.metrics.count(
                    &crate::metric_names::CALLS_REFUSED,
                    &[("reason", reason)],
                    1,
                );
                tracing::info!(method = request.uri().path(), %error, "call refused");
                let status: Status = error.into();
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_api_has_a_need() {
        assert_eq!(needed("/grpc.health.v1.Health/Check"), Need::Nothing);
        assert_eq!(
            needed("/paygrid.v1.Workflows/Submit"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            needed("/paygrid.v1.Workflows/Get"),
            Need::Role(Role::Viewer)
        );
        assert_eq!(needed("/paygrid.v1.AgentHub/Session"), Need::Agent);
        assert_eq!(needed("/paygrid.v1.AgentHub/ListMembers"), Need::Caller);
        assert_eq!(
            needed("/paygrid.v1.AgentHub/CallTool"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            needed("/lf.a2a.v1.A2AService/SendMessage"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            needed("/lf.a2a.v1.A2AService/GetTask"),
            Need::Role(Role::Viewer)
        );
        assert_eq!(needed("/somewhere.Else/Do"), Need::Role(Role::Admin));
    }
}
