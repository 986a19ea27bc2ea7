//! A PostgreSQL server for the controller's tests: Debian's `postgresql` binaries run as
//! the `postgres` user on a fresh cluster in a temporary directory, listening on 127.0.0.1
//! and a free port (and a socket in that directory), trust authentication for the `terra`
//! role. Stopped by PID and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server.
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<major>/bin`).
fn bin_dir() -> crate::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "PostgreSQL is not installed: apt-get install -y postgresql".into())
}

/// `cmd` run as the `postgres` user (the server refuses root). setpriv execs in place, so
/// a spawned child's PID is the server's own.
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "postgres",
        "--regid",
        "postgres",
        "--clear-groups",
        "--",
    ])
    .arg(program);
    c
}

impl Postgres {
    /// Starts a server with an empty database `terra`.
    pub fn start() -> crate::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "terra-pg-{}-{}",
            std::process::id(),
            &crate::oci_root::sha256(format!("{:?}", Instant::now()).as_bytes())[7..15]
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        let data = dir.join("data");
        crate::run(
            as_postgres(&bin.join("initdb"))
                .args([
                    "--auth=trust",
                    "--username=terra",
                    "--no-sync",
                    "--encoding=UTF8",
                ])
                .arg("-D")
                .arg(&data),
        )?;
        let port = crate::free_port()?;
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .arg("-k")
            .arg(&dir)
            // A test database: durability is not what is tested.
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let mut pg = Postgres { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = pg.child.try_wait() {
                return Err(format!("postgres exited ({status}):\n{}", pg.log()));
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "terra"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("postgres did not start in 30 s:\n{}", pg.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        crate::run(Command::new(bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "terra",
            "terra",
        ]))?;
        Ok(pg)
    }

    /// The URL of database `terra`.
    pub fn url(&self) -> String {
        format!("postgres://terra@127.0.0.1:{}/terra", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown; SIGKILL by PID if it lingers.
        // SAFETY: kill(2) on the PID of our own child, not yet reaped (so not reused).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
