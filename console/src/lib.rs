//! The web console (docs/console.md): one page of HTML, CSS and JavaScript compiled into
//! the binary (no build step, no request leaves the control unit), served at `/` on the
//! control unit's HTTP listener, and a JSON API under `/api/` that is a client of the
//! control unit's gRPC API, as MCP is: every call goes with the browser's own bearer
//! token, so the control unit checks its role and audits it as that person.

mod api;
mod json;

use paygrid_security::ClientSecurity;

/// How the console is served.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Trace links open `{jaeger_url}/trace/{trace id}`; `None`: no links.
    pub jaeger_url: Option<String>,
    /// Calls need `authorization: Bearer TOKEN` (the console asks for one); without it
    /// (plaintext serving, `--insecure`), anyone who reaches the listener operates.
    pub require_token: bool,
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

/// `/`, its assets and `/api/...`, talking to the control unit at `endpoint` through
/// `security`'s connector (connected lazily).
pub fn router(
    endpoint: &str,
    security: ClientSecurity,
    options: ConsoleOptions,
) -> anyhow::Result<axum::Router> {
    use axum::routing::{get, post};
    let state = api::Api::new(endpoint, security, options)?;
    let asset = |body: &'static str, kind: &'static str| {
        get(move || async move {
            (
                [
                    (http::header::CONTENT_TYPE, kind),
                    (http::header::CACHE_CONTROL, "no-store"),
                    // Nothing but this page's own assets and its own API.
                    (
                        http::header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                    (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                body,
            )
        })
    };
    Ok(axum::Router::new()
        .route("/", asset(INDEX, "text/html; charset=utf-8"))
        .route(
            "/console.js",
            asset(SCRIPT, "text/javascript; charset=utf-8"),
        )
        .route("/console.css", asset(STYLE, "text/css; charset=utf-8"))
        .route("/api/config", get(api::config))
        .route("/api/workflows", get(api::list))
        .route("/api/workflows/{id}", get(api::workflow))
        .route("/api/workflows/{id}/{operation}", post(api::operate))
        .route("/api/bulk", post(api::bulk))
        .route("/api/agents", get(api::agents))
        .route("/api/health", get(api::health))
        .route("/api/limits", get(api::limits))
        .route("/api/dispatch/{operation}", post(api::dispatch))
        .with_state(state))
}
