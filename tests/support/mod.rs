//! Test support: start the real `paygrid` binary's parts on loopback port 0, read their
//! addresses, talk to them over gRPC and HTTP, and kill them on drop.

#![allow(dead_code, clippy::unwrap_used)]

pub mod otlp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paygrid_proto::v1 as pb;
use paygrid_proto::v1::agent_hub_client::AgentHubClient;
use paygrid_proto::v1::workflows_client::WorkflowsClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_paygrid");

/// The certificates every part of every test presents (a CA made once per test binary,
/// with the node certificate and the clients `root` and `exec`), and a token key beside
/// them: the tests run with TLS and authentication on, as Paygrid runs by default.
/// A part started with `--insecure` gets none of it.
pub fn certs() -> &'static std::path::Path {
    static CERTS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("paygrid-test-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        paygrid_security::certs::create(&dir, &["root", "exec"]).expect("test certificates");
        paygrid_security::token::TokenKey::generate(&dir.join("token.key")).expect("token key");
        dir
    })
}

/// The token key in [`certs`], for `--token-key`.
pub fn token_key() -> String {
    certs().join("token.key").display().to_string()
}

/// A bearer token for `subject` with `role`, valid for an hour.
pub fn token(subject: &str, role: paygrid_security::Role) -> String {
    paygrid_security::token::TokenKey::from_file(&certs().join("token.key"))
        .expect("token key")
        .mint(subject, role, paygrid_security::token::now_secs(), 3600)
}

/// Sets the certificates directory on a command unless it runs `--insecure` or names
/// its own.
fn secure(command: &mut Command, args: &[&str]) {
    if !args
        .iter()
        .any(|a| *a == "--insecure" || *a == "--certs-dir")
    {
        command.env("PAYGRID_CERTS_DIR", certs());
    }
}

/// `paygrid` as a command, with the test certificates (TLS, presenting `root`).
pub fn paygrid() -> Command {
    let mut command = Command::new(BIN);
    command.env("PAYGRID_CERTS_DIR", certs());
    command
}

/// [`paygrid`] for async tests.
pub fn paygrid_async() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command.env("PAYGRID_CERTS_DIR", certs());
    command
}

fn url_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or_default()
        .to_owned()
}

/// `127.0.0.1:PORT` of `http://…` or `https://…`.
pub fn host_of(url: &str) -> &str {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

/// The skills the card-payment example needs, all offered by a default `paygrid exec`.
pub const SHIPPED_SKILLS: &[&str] = &[
    "gateway.authorize",
    "risk.score",
    "ledger.post",
    "verify.amounts",
    "notify.receipt",
];

/// A running part; killed (SIGKILL) when dropped.
pub struct Part {
    pub child: Child,
    pub url: String,
    /// `ADDR` a control unit serves HTTP at (`--http`), as it printed it; empty without.
    pub http: String,
    args: Vec<String>,
}

impl Part {
    /// Starts `paygrid ARGS` and waits for its `listening on URL` (or `started`) line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, None)
    }

    /// Starts with debug logs written to `log` instead of the test's stderr.
    pub fn start_logged(args: &[&str], log: &std::path::Path) -> Self {
        Self::start_with(args, Some(log))
    }

    fn start_with(args: &[&str], log: Option<&std::path::Path>) -> Self {
        let (child, url, http) = Self::spawn(args, log);
        Self {
            child,
            url,
            http,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Kills (SIGKILL) and starts again with the same arguments; a server comes back on
    /// the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = self.args.clone();
        if let Some(listen) = args.iter().position(|a| a == "--listen") {
            let addr = host_of(&self.url).to_owned();
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpListener::bind(&addr).is_err() {
                assert!(Instant::now() < deadline, "port {addr} never came free");
                std::thread::sleep(Duration::from_millis(20));
            }
            args[listen + 1] = addr;
        }
        // And its HTTP on the port it had (tests scrape it again).
        if let Some(http) = args
            .iter()
            .position(|a| a == "--http" || a == "--metrics-addr")
            && !self.http.is_empty()
        {
            args[http + 1] = self.http.clone();
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, url, http) = Self::spawn(&refs, None);
        self.child = child;
        self.http = http;
        if !url.is_empty() {
            self.url = url;
        }
    }

    /// Starts the process; answers its URL and, for a control unit serving HTTP, the
    /// address it serves it at (given as `127.0.0.1:0`, the port is only known once
    /// bound: a port picked beforehand can be taken by another test's part meanwhile).
    fn spawn(args: &[&str], log: Option<&std::path::Path>) -> (Child, String, String) {
        let mut command = Command::new(BIN);
        command.args(args).stdout(Stdio::piped());
        secure(&mut command, args);
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                command
                    .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info")
                    .stderr(Stdio::from(file));
            }
            None => {
                command.env("RUST_LOG", "warn").stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().expect("start paygrid");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        // A control unit serving HTTP says where (`… http on URL: …`) before it says it
        // is ready (`… listening on URL` or `started`, the last line read).
        let serves_http = args.first() == Some(&"control")
            && args
                .iter()
                .any(|a| *a == "--http" || *a == "--metrics-addr");
        let mut http = String::new();
        let url = loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read a line");
            assert!(
                !line.is_empty(),
                "paygrid {args:?} exited before it was ready"
            );
            if serves_http && http.is_empty() && line.contains(" http on ") {
                http = host_of(url_in(&line).trim_end_matches(':')).to_owned();
                continue;
            }
            break url_in(&line);
        };
        assert!(
            !serves_http || !http.is_empty(),
            "paygrid {args:?} did not say where it serves HTTP"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = reader.read_to_string(&mut sink);
        });
        (child, url, http)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.kill();
    }
}

static NEXT_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh directory for one test's state, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("paygrid-test-{}-{what}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gateway simulator `alpha` on a free port, journaling under `dir/gateway`, with `extra`
/// arguments (faults, latency, `--insecure`, ...).
pub fn gateway_sim(dir: &TempDir, extra: &[&str]) -> Part {
    let journal = dir.path("gateway");
    let mut args = vec![
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "alpha",
        "--data-dir",
        &journal,
    ];
    args.extend_from_slice(extra);
    Part::start(&args)
}

/// A control unit, one gateway simulator and one execution unit, each its own process.
pub struct Fleet {
    // Dropped in this order: execution units first, so they do not log a lost session.
    pub execs: Vec<Part>,
    pub control: Part,
    pub gateway: Part,
    pub dir: TempDir,
    /// Every part exports spans here, when set.
    pub otlp: Option<String>,
}

impl Fleet {
    /// A gateway simulator, a control unit and `execs` execution units, each keeping its
    /// state in a fresh temporary directory.
    pub fn start(gateway_args: &[&str], execs: usize) -> Self {
        Self::start_with(gateway_args, execs, None)
    }

    /// As [`Fleet::start`], every part exporting spans to the OTLP endpoint `otlp`.
    pub fn start_with(gateway_args: &[&str], execs: usize, otlp: Option<&str>) -> Self {
        let dir = TempDir::new("fleet");
        let otlp_args: Vec<&str> = match otlp {
            Some(url) => vec!["--otlp", url],
            None => Vec::new(),
        };
        let mut args = vec!["--cost-bps", "25"];
        args.extend_from_slice(gateway_args);
        args.extend_from_slice(&otlp_args);
        let gateway = gateway_sim(&dir, &args);
        let control_dir = dir.path("control");
        let token_key = token_key();
        let mut args = vec![
            "control",
            "--listen",
            "127.0.0.1:0",
            "--lease-ttl-ms",
            "5000",
            // Breakers stay on, with a 1 s cool-down: a gateway restarted in a crash test
            // opens its breaker, and the run need not wait the default 30 s.
            "--breaker-open-ms",
            "1000",
            "--data-dir",
            &control_dir,
            "--token-key",
            &token_key,
        ];
        args.extend_from_slice(&otlp_args);
        let control = Part::start(&args);
        let mut fleet = Self {
            execs: Vec::new(),
            control,
            gateway,
            dir,
            otlp: otlp.map(str::to_owned),
        };
        for n in 0..execs {
            fleet.add_exec(&format!("exec-{n}"), &[]);
        }
        fleet
    }

    pub fn add_exec(&mut self, name: &str, extra: &[&str]) {
        let gateway = format!("alpha={}@25", self.gateway.url);
        let data_dir = self.dir.path(name);
        let mut args = vec![
            "--control",
            &self.control.url,
            "exec",
            "--name",
            name,
            "--gateway",
            &gateway,
            "--data-dir",
            &data_dir,
        ];
        args.extend_from_slice(extra);
        if let Some(url) = &self.otlp {
            args.extend_from_slice(&["--otlp", url]);
        }
        self.execs.push(Part::start(&args));
    }

    pub async fn client(url: &str) -> WorkflowsClient<Channel> {
        WorkflowsClient::new(channel(url).await)
    }

    pub async fn workflows(&self) -> WorkflowsClient<Channel> {
        WorkflowsClient::new(channel(&self.control.url).await)
    }

    pub async fn agents(&self) -> AgentHubClient<Channel> {
        AgentHubClient::new(channel(&self.control.url).await)
    }

    /// Waits until agents offering every skill are connected.
    pub async fn wait_for_skills(&self, skills: &[&str]) {
        self.wait_for_agents(&format!("agents for {skills:?} connected"), |agents| {
            skills.iter().all(|skill| {
                agents.iter().any(|a| {
                    a.connected
                        && a.card
                            .as_ref()
                            .is_some_and(|c| c.skills.iter().any(|s| s.name == *skill))
                })
            })
        })
        .await;
    }

    /// Polls `ListAgents` until `done` holds for the list (30 s at most).
    pub async fn wait_for_agents(&self, what: &str, done: impl Fn(&[pb::AgentInfo]) -> bool) {
        let mut client = self.agents().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let agents = client
                .list_agents(pb::ListAgentsRequest::default())
                .await
                .expect("list agents")
                .into_inner()
                .agents;
            if done(&agents) {
                return;
            }
            assert!(Instant::now() < deadline, "never {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How test clients reach the parts: TLS with the CA of [`certs`], presenting `root`.
pub fn client_security() -> paygrid_security::ClientSecurity {
    paygrid_security::ClientSecurity::tls(
        &paygrid_security::Tls::new(certs()),
        Some("root"),
        None,
        paygrid_security::client::ALPN_H2,
    )
    .expect("client TLS")
}

pub async fn channel(url: &str) -> Channel {
    channel_with(url, &client_security()).await
}

/// A channel with other credentials (another certificate, none, a token).
pub async fn channel_with(url: &str, security: &paygrid_security::ClientSecurity) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match security.channel(security.endpoint(url).expect("url")).await {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {url}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub fn spec(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples/specs/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example spec")
}

pub async fn submit(
    client: &mut WorkflowsClient<Channel>,
    spec: &str,
    input: serde_json::Value,
    priority: pb::Priority,
) -> String {
    client
        .submit(pb::SubmitRequest {
            spec: Some(pb::submit_request::Spec::SpecText(spec.to_owned())),
            input_json: input.to_string(),
            priority: priority.into(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .workflow_id
}

pub fn is_terminal(status: i32) -> bool {
    matches!(
        pb::WorkflowStatus::try_from(status),
        Ok(pb::WorkflowStatus::Succeeded
            | pb::WorkflowStatus::Failed
            | pb::WorkflowStatus::Compensated
            | pb::WorkflowStatus::Cancelled)
    )
}

/// Follows `Watch` until the workflow ends, then returns its final state.
pub async fn wait_terminal(client: &mut WorkflowsClient<Channel>, id: &str) -> pb::Workflow {
    let watch = async {
        let mut stream = client
            .watch(pb::WatchWorkflowRequest {
                workflow_id: id.to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        while let Ok(Some(_)) = stream.message().await {}
    };
    tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("workflow did not finish within 60s");
    let workflow = get(client, id).await;
    assert!(
        is_terminal(workflow.status),
        "watch ended before the workflow did: {workflow:?}"
    );
    workflow
}

pub async fn get(client: &mut WorkflowsClient<Channel>, id: &str) -> pb::Workflow {
    client
        .get(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
}

pub fn task<'a>(workflow: &'a pb::Workflow, id: &str) -> &'a pb::TaskState {
    workflow
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .unwrap_or_else(|| panic!("no task {id}"))
}

/// Read and write, plaintext or TLS.
pub trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A connection to a part's HTTP listener: TLS with the test CA, presenting `root`.
pub fn connect_http(host: &str) -> std::io::Result<Box<dyn Io>> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        paygrid_security::Tls::new(certs())
            .client(Some("root"), &[b"http/1.1"])
            .expect("client TLS")
    });
    let host = host_of(host);
    let tcp = TcpStream::connect(host)?;
    let name = host
        .rsplit_once(':')
        .map_or(host, |(name, _)| name)
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(name).expect("server name");
    let session =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(session, tcp)))
}

/// Reads an HTTP/1.1 response to its end (`Connection: close`); a TLS peer that closes
/// without `close_notify` still ends it.
fn read_all(stream: &mut dyn Io) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => panic!("read: {error}"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A minimal HTTP/1.1 call to the gateway simulator; returns the JSON body.
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let host = host_of(base);
    let mut stream = connect_http(host).expect("connect to gateway");
    let body = body.unwrap_or("");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("write");
    stream.flush().expect("flush");
    let response = read_all(&mut *stream);
    let (_, body) = response.split_once("\r\n\r\n").expect("http response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("gateway answered {response}: {e}"))
}

/// An HTTP/1.1 call with an `Idempotency-Key` header (the simulator's effects need one);
/// returns the status and the body as text.
pub fn http_keyed(base: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let host = host_of(base);
    let mut stream = connect_http(host).expect("connect to gateway");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("write");
    stream.flush().expect("flush");
    let response = read_all(&mut *stream);
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// Runs the `paygrid` CLI against a control unit; its exit code and stdout.
pub fn cli(control: &str, args: &[&str]) -> (i32, String) {
    let mut command = Command::new(BIN);
    command.arg("--control").arg(control).args(args);
    secure(&mut command, args);
    let output = command.output().expect("run paygrid");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A free loopback port (for parts that take a fixed address, like metrics endpoints).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// `GET /metrics` as text, retried until the endpoint answers (it starts with its part).
pub fn scrape(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = connect_http(addr) {
            write!(
                stream,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
            stream.flush().expect("flush");
            let response = read_all(&mut *stream);
            if let Some((_, body)) = response.split_once("\r\n\r\n") {
                return body.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no metrics at {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn gateway_stats(gateway: &Part) -> serde_json::Value {
    http(&gateway.url, "GET", "/v1/stats", None)
}

/// A card payment that failed because the gateway at `gateway_url` refused every
/// attempt (503s: nothing was taken); the gateway is left refusing. Returns the failed
/// workflow.
pub async fn payment_failed_at_gateway(
    client: &mut WorkflowsClient<Channel>,
    gateway_url: &str,
) -> pb::Workflow {
    http(
        gateway_url,
        "PUT",
        "/v1/admin/faults",
        Some(r#"{"fail_next": 1000}"#),
    );
    let id = submit(
        client,
        &spec("card-payment"),
        card("tok_visa"),
        pb::Priority::Unspecified,
    )
    .await;
    let workflow = wait_terminal(client, &id).await;
    assert_eq!(
        workflow.status,
        pb::WorkflowStatus::Failed as i32,
        "{workflow:#?}"
    );
    workflow
}

/// A card payment's input: 12.50 EUR with a test card token.
pub fn card(token: &str) -> serde_json::Value {
    serde_json::json!({"amount_minor": 1250, "currency": "EUR", "card_token": token})
}

/// The Python that can import `module` (`PAYGRID_PYTHON`, else `python3`), or `None`: the
/// test says so and skips, unless `PAYGRID_REQUIRE_CLIENTS` is set (as `.ci/run` does),
/// when a missing client fails it.
pub fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("PAYGRID_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("PAYGRID_REQUIRE_CLIENTS").is_none(),
        "`{python}` cannot import `{module}`: run .ci/run, or set PAYGRID_PYTHON"
    );
    eprintln!("skipped: `{python}` cannot import `{module}` (run .ci/run to install it)");
    None
}

/// Runs `tests/clients/SCRIPT` with `args`; its last stdout line as JSON. Fails the test
/// with the script's output when it exits non-zero.
pub fn run_client_script(python: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    // The script trusts the test CA and authenticates as itself (`a2a_check.py` is
    // `a2a-check`), an operator.
    let subject = script.trim_end_matches(".py").replace('_', "-");
    let output = Command::new(python)
        .arg(&path)
        .args(args)
        .env("PAYGRID_CERTS_DIR", certs())
        .env(
            "PAYGRID_TOKEN",
            token(&subject, paygrid_security::Role::Operator),
        )
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

/// A gateway simulator, a control unit serving HTTP at `http` (metrics, MCP, the A2A
/// card) and one execution unit hosting every shipped agent, each in its own process.
pub struct HttpFleet {
    pub exec: Part,
    pub control: Part,
    pub gateway: Part,
    pub http: String,
    pub dir: TempDir,
}

impl HttpFleet {
    pub fn start(what: &str) -> Self {
        let dir = TempDir::new(what);
        let gateway = gateway_sim(&dir, &[]);
        let control = Part::start(&[
            "control",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path("control"),
            "--http",
            "127.0.0.1:0",
            "--token-key",
            &token_key(),
        ]);
        let alpha = format!("alpha={}@25", gateway.url);
        let exec = Part::start(&[
            "--control",
            &control.url,
            "exec",
            "--gateway",
            &alpha,
            "--data-dir",
            &dir.path("exec"),
        ]);
        Self {
            exec,
            http: control.http.clone(),
            control,
            gateway,
            dir,
        }
    }

    /// Runs one card payment to its end, so `card-payment@3` is in the catalog for
    /// clients that submit it by reference.
    pub async fn register_card_payment(&self) -> WorkflowsClient<Channel> {
        let mut workflows = Fleet::client(&self.control.url).await;
        let warm = submit(
            &mut workflows,
            &spec("card-payment"),
            card("tok_visa"),
            pb::Priority::Unspecified,
        )
        .await;
        wait_terminal(&mut workflows, &warm).await;
        workflows
    }
}
