//! A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` (Debian's
//! `postgresql-15`, installed by `.ci/run`) on a free port in a temp directory, stopped on
//! drop. Shared by the store suite and the cluster tests (`tests/cluster.rs`).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paygrid-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A throwaway PostgreSQL cluster, stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

impl Postgres {
    fn find_bin() -> Option<PathBuf> {
        let candidates = [
            "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/16/bin",
            "/usr/local/bin",
            "/usr/bin",
        ];
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// A cluster of its own, in a directory named after the test.
    pub fn start(name: &str) -> Option<Self> {
        let bin = Self::find_bin()?;
        let as_postgres_user = unsafe_is_root();
        let data = temp_dir(name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster dir to postgres");
        }
        let cluster = Self {
            bin,
            data: data.clone(),
            port,
            as_postgres_user,
        };
        let output = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(data.join("db"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            data.display()
        );
        let output = cluster
            .command("pg_ctl")
            .args(["-D"])
            .arg(data.join("db"))
            .args(["-o", &options, "-w", "-l"])
            .arg(data.join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data.join("db"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Root cannot run initdb; the Debian `postgres` user can.
fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
