//! The tour, `paygrid dev`, as a new user runs it: with security on (its own CA,
//! certificates, token key and access policy), every example workflow succeeds and the
//! settlement batches reconcile.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

#[test]
fn the_tour_runs_with_tls_and_its_own_certificates() {
    let dir = TempDir::new("dev");
    let data = dir.path("data");
    // No certificates from the test harness: dev makes its own.
    let output = std::process::Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--exit",
            "--data-dir",
            &data,
        ])
        .env_remove("PAYGRID_CERTS_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("example workflows succeeded"), "{stdout}");
    assert!(stdout.contains("closed and reconciled"), "{stdout}");
    assert!(
        stdout.contains("control unit on https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("--certs-dir"), "{stdout}");
    for file in [
        "certs/ca.crt",
        "certs/node.crt",
        "certs/client.root.crt",
        "certs/client.dev-exec.crt",
        "token.key",
        "access.yaml",
    ] {
        assert!(dir.0.join("data").join(file).exists(), "{file} missing");
    }
    assert!(!stderr.contains("PLAINTEXT"), "{stderr}");
}

/// `paygrid dev --control-units 3`: a cluster on a PostgreSQL dev starts itself; the
/// examples succeed, the three members share the partitions, and Ctrl-C (SIGTERM) stops
/// everything, the database last.
#[test]
fn the_tour_runs_on_a_cluster_of_three_control_units() {
    use std::io::BufRead;
    if !postgres_binaries_present() {
        eprintln!("SKIPPED: PostgreSQL server binaries not found");
        return;
    }
    let dir = TempDir::new("dev-cluster");
    let data = dir.path("data");
    let mut child = std::process::Command::new(BIN)
        .args([
            "dev",
            "--control-units",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
        ])
        .env_remove("PAYGRID_CERTS_DIR")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut store = None;
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some((_, url)) = line.split_once("paygrid cluster --store ") {
            store = Some(url.trim().to_owned());
        }
        if line.contains("still serving") {
            break;
        }
    }
    assert!(seen.contains("example workflows succeeded"), "{seen}");
    assert!(seen.contains("3 control units in a cluster"), "{seen}");
    let store = store.unwrap_or_else(|| panic!("no store URL printed: {seen}"));
    // The members spread the partitions between them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let output = paygrid()
            .args(["--json", "cluster", "--store", &store])
            .output()
            .unwrap();
        let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let shares: Vec<u64> = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["partitions"].as_u64().unwrap())
            .collect();
        if shares.len() == 3 && shares.iter().all(|s| *s > 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the members never shared the partitions: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::spawn(move || lines.for_each(drop));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        !dir.0.join("data/postgres/data/postmaster.pid").exists(),
        "dev stopped its PostgreSQL"
    );
}

fn postgres_binaries_present() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("initdb").is_file()));
    on_path
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|dirs| {
            dirs.flatten()
                .any(|d| d.path().join("bin/initdb").is_file())
        })
}
