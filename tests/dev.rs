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
