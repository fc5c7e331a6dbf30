//! Security across real processes: agents authenticate with client certificates from the
//! CA and may offer only the skills the access policy gives them; operators and clients
//! authenticate with bearer tokens whose role decides what they may call; expired and
//! altered tokens are refused; and the bytes between the parts are encrypted (read off
//! the wire by a proxy in the middle, against the same run in plaintext).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use paygrid_security::client::ALPN_H2;
use paygrid_security::{ClientSecurity, Role, Tls};
use support::*;
use tonic::Code;

const POLICY: &str = "identities:
  root: { role: admin }
  exec: { role: operator, skills: [\"*\"] }
  risky: { skills: [\"risk.*\"] }
  watcher: { role: viewer }
";

/// A control unit with the access policy above and the test token key.
fn secured_control(dir: &TempDir) -> Part {
    let policy = dir.path("access.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    Part::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
        "--access",
        &policy,
        "--token-key",
        &token_key(),
    ])
}

/// TLS trusting the test CA, presenting `cert` (or nothing), sending `token` (or nothing).
fn as_(cert: Option<&str>, token: Option<&str>) -> ClientSecurity {
    ClientSecurity::tls(&Tls::new(certs()), cert, token, ALPN_H2).unwrap()
}

fn register(skill: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        card: Some(pb::AgentCard {
            name: "probe".into(),
            role: pb::AgentRole::Worker.into(),
            version: "1".into(),
            skills: vec![pb::Skill {
                name: skill.into(),
                input_schema_json: "{}".into(),
                output_schema_json: "{}".into(),
                ..Default::default()
            }],
            max_concurrency: 1,
            ..Default::default()
        }),
        execution_unit: "probe".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_need_a_certificate_from_the_ca_and_offer_only_the_skills_they_may() {
    for name in ["risky", "stranger"] {
        paygrid_security::certs::add_client(certs(), name).unwrap();
    }
    let dir = TempDir::new("agents-access");
    let control = secured_control(&dir);
    let url = control.url.clone();
    assert!(url.starts_with("https://"), "{url}");

    // No certificate (and no token): refused before the service sees the call.
    let mut anonymous = AgentHubClient::new(channel_with(&url, &as_(None, None)).await);
    let refused = anonymous
        .register(register("risk.score"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("no credentials"), "{refused:?}");

    // `risky` may offer risk.* only: the card with gateway.capture is refused, naming it.
    let mut risky = AgentHubClient::new(channel_with(&url, &as_(Some("risky"), None)).await);
    risky.register(register("risk.score")).await.unwrap();
    let refused = risky
        .register(register("gateway.capture"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("`gateway.capture`") && refused.message().contains("risky"),
        "{refused:?}"
    );

    // A certificate from the CA whose name the policy does not know connects no agents.
    let mut stranger = AgentHubClient::new(channel_with(&url, &as_(Some("stranger"), None)).await);
    let refused = stranger.register(register("risk.score")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("stranger"), "{refused:?}");

    // A certificate from another CA: the handshake fails, nothing is answered.
    let other = TempDir::new("other-ca");
    paygrid_security::certs::create(&other.0, &["rogue"]).unwrap();
    let mixed = TempDir::new("mixed");
    std::fs::copy(certs().join("ca.crt"), mixed.0.join("ca.crt")).unwrap();
    for file in ["client.rogue.crt", "client.rogue.key"] {
        std::fs::copy(other.0.join(file), mixed.0.join(file)).unwrap();
    }
    let rogue = ClientSecurity::tls(&Tls::new(&mixed.0), Some("rogue"), None, ALPN_H2).unwrap();
    let answered = match rogue.channel(rogue.endpoint(&url).unwrap()).await {
        Err(_) => None,
        Ok(channel) => Some(
            AgentHubClient::new(channel)
                .register(register("risk.score"))
                .await,
        ),
    };
    assert!(
        !matches!(answered, Some(Ok(_))),
        "a certificate from another CA registered an agent: {answered:?}"
    );

    // A real execution unit under the `risky` identity hosts its risk agent.
    let _exec = Part::start(&[
        "--control",
        &url,
        "exec",
        "--name",
        "risk-only",
        "--cert-name",
        "risky",
        "--agents",
        "risk",
    ]);
    wait_connected(&mut AgentHubClient::new(channel(&url).await), "risk-only").await;
}

/// Waits until an agent of the execution unit `unit` is connected.
async fn wait_connected(agents: &mut AgentHubClient<tonic::transport::Channel>, unit: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = agents
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        if listed
            .iter()
            .any(|a| a.connected && a.execution_unit == unit)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "execution unit {unit} never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn parked_spec() -> pb::SubmitRequest {
    pb::SubmitRequest {
        spec: Some(pb::submit_request::Spec::SpecText(
            "apiVersion: paygrid/v1\nkind: Workflow\nname: parked\nversion: 1\ntasks:\n  - id: wait\n    skill: nobody.offers\n"
                .into(),
        )),
        input_json: "{}".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_s_role_decides_what_its_holder_may_do() {
    let dir = TempDir::new("roles");
    let control = secured_control(&dir);
    let url = control.url.clone();
    let workflows = |token: String| {
        let url = url.clone();
        async move {
            let security = as_(None, Some(&token));
            WorkflowsClient::new(security.authorize(channel_with(&url, &security).await))
        }
    };
    let mut viewer = workflows(token("vera", Role::Viewer)).await;
    let mut operator = workflows(token("olga", Role::Operator)).await;

    viewer
        .list(pb::ListWorkflowsRequest::default())
        .await
        .unwrap();
    let refused = viewer.submit(parked_spec()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("vera (token)")
            && refused.message().contains("`operator` role")
            && refused.message().contains("`viewer`"),
        "{refused:?}"
    );
    let id = operator
        .submit(parked_spec())
        .await
        .unwrap()
        .into_inner()
        .workflow_id;
    let cancel = pb::CancelWorkflowRequest {
        workflow_id: id.clone(),
        reason: "test".into(),
    };
    let refused = viewer.cancel(cancel.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    operator.cancel(cancel).await.unwrap();

    // A certificate the policy gives only `viewer` may read and not submit.
    paygrid_security::certs::add_client(certs(), "watcher").unwrap();
    let security = as_(Some("watcher"), None);
    let mut watcher = WorkflowsClient::new(channel_with(&url, &security).await);
    watcher
        .get(pb::GetWorkflowRequest {
            workflow_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = watcher.submit(parked_spec()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The audit log: olga's submit and cancel, with who, how, role and outcome, kept
    // across a restart; only an admin reads it.
    let refused = viewer
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut control = control;
    control.restart();
    let url = control.url.clone();
    let mut admin = WorkflowsClient::new(channel(&url).await);
    let entries = admin
        .list_audit(pb::ListAuditRequest {
            target: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<(&str, &str, &str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.proof.as_str(),
                e.role.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("cancel", "olga", "token", "operator", "ok"),
            ("submit", "olga", "token", "operator", "ok"),
        ],
        "{entries:?}"
    );
    assert!(entries[0].origin.starts_with("127.0.0.1:"), "{entries:?}");
    assert!(entries[1].detail.starts_with("parked@1"), "{entries:?}");
    let (code, shown) = cli(&url, &["audit", "--workflow", &id]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("olga (token, operator)") && shown.contains("cancel"),
        "{shown}"
    );

    // Expired, altered, or signed with another key: refused, saying which.
    let key = paygrid_security::token::TokenKey::from_file(&certs().join("token.key")).unwrap();
    let now = paygrid_security::token::now_secs();
    let expired = key.mint("olga", Role::Operator, now - 7_200, 60);
    let valid = key.mint("vera", Role::Viewer, now, 600);
    let parts: Vec<&str> = valid.split('.').collect();
    let raised = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap();
        engine.encode(claims.replace("viewer", "admin"))
    };
    let tampered = format!("{}.{raised}.{}", parts[0], parts[2]);
    let foreign = paygrid_security::token::TokenKey::new(b"a key that is not the control unit's")
        .mint("mallory", Role::Admin, now, 600);
    for (token, says) in [
        (expired, "expired"),
        (tampered, "altered"),
        (foreign, "another key"),
    ] {
        let mut client = workflows(token).await;
        let refused = client
            .list(pb::ListWorkflowsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains(says), "{says}: {refused:?}");
    }

    // Health checks need no credentials (load balancers probe them).
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        channel_with(&url, &as_(None, None)).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// A TCP proxy that forwards to `target` and keeps every byte it forwards, both ways.
fn recording_proxy(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let (addr, seen, _) = counting_proxy(target);
    (addr, seen)
}

/// As [`recording_proxy`], also counting the connections it accepted.
fn counting_proxy(
    target: String,
) -> (
    String,
    Arc<Mutex<Vec<u8>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let seen = recorded.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16_384];
                    loop {
                        match from.read(&mut buffer) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                seen.lock().unwrap().extend_from_slice(&buffer[..n]);
                                if to.write_all(&buffer[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (addr, seen, accepted)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One card payment with a marked card token through proxies in front of the control
/// unit (operator client and execution unit) and the gateway (execution unit); what the
/// proxies saw, and the payment's end.
async fn payment_through_proxies(insecure: bool) -> (Vec<u8>, i32) {
    let dir = TempDir::new(if insecure { "wire-plain" } else { "wire-tls" });
    let flag: &[&str] = if insecure { &["--insecure"] } else { &[] };
    let gateway = gateway_sim(&dir, flag);
    let control_dir = dir.path("control");
    let mut args = vec![
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &control_dir,
    ];
    args.extend_from_slice(flag);
    let control = Part::start(&args);
    let scheme = if insecure { "http" } else { "https" };
    let (to_control, control_bytes) = recording_proxy(host_of(&control.url).to_owned());
    let (to_gateway, gateway_bytes) = recording_proxy(host_of(&gateway.url).to_owned());
    let control_url = format!("{scheme}://{to_control}");
    let alpha = format!("alpha={scheme}://{to_gateway}@25");
    let exec_dir = dir.path("exec");
    let mut args = vec![
        "--control",
        &control_url,
        "exec",
        "--gateway",
        &alpha,
        "--data-dir",
        &exec_dir,
    ];
    args.extend_from_slice(flag);
    let _exec = Part::start(&args);
    let security = if insecure {
        ClientSecurity::insecure()
    } else {
        client_security()
    };
    let mut client = WorkflowsClient::new(channel_with(&control_url, &security).await);
    let id = submit(
        &mut client,
        &spec("card-payment"),
        card("tok_wiremarker4242"),
        pb::Priority::Unspecified,
    )
    .await;
    let status = wait_terminal(&mut client, &id).await.status;
    let mut seen = control_bytes.lock().unwrap().clone();
    seen.extend_from_slice(&gateway_bytes.lock().unwrap());
    (seen, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bytes_between_parts_are_encrypted() {
    let marker = b"tok_wiremarker4242";
    // In plaintext the proxies see the card token, the spec and the skill names: the
    // check below can fail.
    let (plain, status) = payment_through_proxies(true).await;
    assert_eq!(status, pb::WorkflowStatus::Succeeded as i32);
    assert!(contains(&plain, marker) && contains(&plain, b"gateway.authorize"));
    let (encrypted, status) = payment_through_proxies(false).await;
    assert_eq!(status, pb::WorkflowStatus::Succeeded as i32);
    assert!(
        encrypted.len() > 10_000,
        "the proxies saw the traffic: {} bytes",
        encrypted.len()
    );
    for needle in [
        &marker[..],
        b"gateway.authorize",
        b"card-payment",
        b"Idempotency-Key",
    ] {
        assert!(
            !contains(&encrypted, needle),
            "`{}` crossed the wire in plaintext",
            String::from_utf8_lossy(needle)
        );
    }
}

/// The certificate a TLS server at `addr` presents now.
fn served_certificate(addr: &str, tls: &Tls) -> Vec<u8> {
    let config = tls.client(Some("root"), &[b"h2"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut session = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    while session.is_handshaking() {
        session.complete_io(&mut tcp).unwrap();
    }
    session.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_serves_new_connections_without_dropping_sessions() {
    // Its own copy of the certificates: the renewal must not touch other tests'.
    let dir = TempDir::new("rotation");
    let certs_dir = dir.0.join("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    for entry in std::fs::read_dir(certs()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, certs_dir.join(path.file_name().unwrap())).unwrap();
    }
    let certs_arg = certs_dir.display().to_string();
    let control = Part::start(&[
        "--certs-dir",
        &certs_arg,
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path("control"),
    ]);
    let (to_control, _, connections) = counting_proxy(host_of(&control.url).to_owned());
    let proxied = format!("https://{to_control}");
    let _exec = Part::start(&[
        "--certs-dir",
        &certs_arg,
        "--control",
        &proxied,
        "exec",
        "--name",
        "rotating",
        "--agents",
        "risk",
    ]);
    let tls = Tls::new(&certs_dir);
    let security = ClientSecurity::tls(&tls, Some("root"), None, ALPN_H2).unwrap();
    let mut hub = AgentHubClient::new(channel_with(&control.url, &security).await);
    wait_connected(&mut hub, "rotating").await;
    let score = |n: u32| {
        pb::CallToolRequest {
        tool: "risk.score".into(),
        arguments_json: serde_json::json!({"amount_minor": 1250, "currency": "EUR", "card_token": format!("tok_rotation_{n}")}).to_string(),
        idempotency_key: format!("rotation-{n}"),
        timeout_ms: 30_000,
        ..Default::default()
    }
    };
    // The unit has done work.
    assert!(
        hub.call_tool(score(1))
            .await
            .unwrap()
            .into_inner()
            .succeeded
    );
    let sessions = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sessions >= 1);

    let before = served_certificate(host_of(&control.url), &tls);
    paygrid_security::certs::renew_node(&certs_dir).unwrap();
    let renewed =
        paygrid_security::tls::read_certs(&certs_dir.join("node.crt")).unwrap()[0].to_vec();
    assert_ne!(before, renewed);
    // New handshakes get the new certificate once the control unit has seen the files
    // change (it checks every two seconds).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while served_certificate(host_of(&control.url), &tls) != renewed {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The execution unit's session carried on: work still flows over it, and it never
    // opened another connection.
    assert!(
        hub.call_tool(score(2))
            .await
            .unwrap()
            .into_inner()
            .succeeded
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        sessions,
        "the execution unit reconnected"
    );
}
