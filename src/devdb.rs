//! The PostgreSQL of `paygrid dev --control-units N`: Debian's server binaries
//! (`initdb`, `pg_ctl`) run a database under the dev data dir on a free loopback port,
//! stopped when dev stops. Its data stays for the next run (`--fresh` empties it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::operator::UsageError;

pub struct DevPostgres {
    bin: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
    pub url: String,
}

/// Where the server binaries are: `initdb` on the PATH, else Debian's versioned
/// directories (newest first).
fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

impl DevPostgres {
    /// Initializes (once) and starts the database in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = find_bin().ok_or_else(|| {
            UsageError(
                "--control-units needs PostgreSQL's server binaries (initdb, pg_ctl): install Debian's postgresql package, or run a cluster on your own PostgreSQL (docs/cluster.md)"
                    .into(),
            )
        })?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        // initdb refuses to run as root: Debian's `postgres` user runs the database then.
        let as_postgres_user = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let data = dir.join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let db = Self {
            bin,
            data: data.clone(),
            as_postgres_user,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        if as_postgres_user {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&dir))?;
        }
        if !data.join("PG_VERSION").exists() {
            run(db
                .command("initdb")
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data))?;
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            dir.display()
        );
        run(db
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(dir.join("postgres.log"))
            .args(["-w", "start"]))
        .with_context(|| {
            format!(
                "start PostgreSQL (its log: {})",
                dir.join("postgres.log").display()
            )
        })?;
        Ok(db)
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
}

impl Drop for DevPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("run {:?}", command.get_program()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{:?} failed: {}{}",
            command.get_program(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
