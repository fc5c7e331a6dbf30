//! A custom agent in about 60 lines: a currency-conversion quote skill (`fx.quote`).
//! Run a control unit (`paygrid control`), then:
//! `cargo run -p paygrid-examples --bin custom_agent -- http://127.0.0.1:50051`

use std::collections::BTreeMap;
use std::sync::Arc;

use paygrid_execution_unit::{
    Agent, AgentCard, ExecutionUnit, ExecutionUnitConfig, Role, SkillEffect, SkillSpec, Task,
    TaskOutcome,
};
use serde_json::json;
use tokio_util_free::shutdown_on_ctrl_c;

struct FxAgent;

#[async_trait::async_trait]
impl Agent for FxAgent {
    fn card(&self) -> AgentCard {
        AgentCard {
            name: "fx".into(),
            role: Role::Service,
            version: "1.0.0".into(),
            skills: vec![SkillSpec {
                name: "fx.quote".into(),
                description: "Convert an amount in minor units between EUR and USD".into(),
                input_schema: json!({"type": "object", "required": ["amount_minor", "from", "to"]}),
                output_schema: json!({"type": "object", "properties": {"amount_minor": {"type": "integer"}, "rate_ppm": {"type": "integer"}}}),
                effect: SkillEffect::ReadOnly,
            }],
            max_concurrency: 32,
            labels: BTreeMap::from([("region".into(), "eu".into())]),
        }
    }

    async fn handle(&self, task: Task) -> TaskOutcome {
        let (amount, from, to) = match (task.i64("amount_minor"), task.str("from"), task.str("to"))
        {
            (Ok(amount), Ok(from), Ok(to)) => (amount, from, to),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
        };
        // Rates in parts per million keep the arithmetic exact in integers.
        let rate_ppm: i64 = match (from, to) {
            ("EUR", "USD") => 1_080_000,
            ("USD", "EUR") => 925_926,
            (a, b) if a == b => 1_000_000,
            _ => return TaskOutcome::permanent("unsupported_pair", format!("{from}->{to}")),
        };
        let converted = (i128::from(amount) * i128::from(rate_ppm) / 1_000_000) as i64;
        TaskOutcome::Succeeded(json!({"amount_minor": converted, "rate_ppm": rate_ppm}))
    }
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let mut config = ExecutionUnitConfig::new("fx-example", endpoint);
    // With TLS (PAYGRID_CERTS_DIR), the agent presents client.NAME.crt
    // (PAYGRID_CERT_NAME, default `exec`): its identity, which the access policy lets
    // offer `fx.convert` (docs/security.md).
    if let Some(dir) = std::env::var_os("PAYGRID_CERTS_DIR") {
        let name = std::env::var("PAYGRID_CERT_NAME").unwrap_or_else(|_| "exec".into());
        let tls = paygrid_security::Tls::new(dir);
        config.security = match paygrid_security::ClientSecurity::tls(
            &tls,
            Some(&name),
            None,
            paygrid_security::client::ALPN_H2,
        ) {
            Ok(security) => security,
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(2);
            }
        };
    }
    let unit = ExecutionUnit::new(config).host(Arc::new(FxAgent));
    unit.run(shutdown_on_ctrl_c()).await;
}

mod tokio_util_free {
    /// A cancellation token fired by Ctrl-C.
    pub fn shutdown_on_ctrl_c() -> tokio_util::sync::CancellationToken {
        let token = tokio_util::sync::CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            trigger.cancel();
        });
        token
    }
}
