//! The real `metricspool serve` binary as a child process on 127.0.0.1, with a config
//! written into a temp dir. Dropping it kills the process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{self, Reply};
use super::servers::free_port;

/// Tenant `a`'s token.
pub const TOKEN_A: &str = "token-for-tenant-a";
/// Tenant `b`'s token.
pub const TOKEN_B: &str = "token-for-tenant-b";
/// The admin token.
pub const TOKEN_ADMIN: &str = "admin-token";

/// SHA-256 hex of a token, as the config holds it.
pub fn hash(token: &str) -> String {
    metricspool::daemon::settings::token_hash(token)
}

/// A daemon process.
#[derive(Debug)]
pub struct DaemonProc {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// False when the daemon serves TLS: readiness is then a TCP connect, not `/healthz`.
    pub plain: bool,
    child: Option<Child>,
}

impl DaemonProc {
    /// Writes a config: listener, data dir, master key file, admin token, tenants `a` and
    /// `b`, then `extra` (more tables: backends, tenant settings). Does not start it.
    pub fn new(extra: &str) -> Self {
        Self::with_server("", extra)
    }

    /// [`DaemonProc::new`] with more `[server]` lines.
    pub fn with_server(server: &str, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("metricspool-daemon-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let key = dir.path().join("master.key");
        metricspool::MasterKey::generate()
            .expect("key")
            .write_new_file(&key)
            .expect("write key");
        let config = dir.path().join("metricspool.toml");
        let text = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "10s"
{server}

[logging]
level = "warn"

[storage]
data_dir = "{data}"

[keys]
master_key_file = "{key}"

[admin]
token_sha256 = "{admin}"

{extra}
"#,
            data = dir.path().join("data").display(),
            key = key.display(),
            admin = hash(TOKEN_ADMIN),
        );
        std::fs::write(&config, text).expect("write config");
        Self {
            port,
            dir,
            config,
            plain: true,
            child: None,
        }
    }

    /// A `[tenants.<id>]` table with the token's hash, plus `extra` lines.
    pub fn tenant(id: &str, token: &str, extra: &str) -> String {
        format!(
            "[tenants.{id}]\ntoken_sha256 = [\"{}\"]\n{extra}\n",
            hash(token)
        )
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process and waits for `/healthz`.
    pub fn start(&mut self) -> &mut Self {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_metricspool"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start metricspool serve");
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let ready = if self.plain {
                http::get(self.port, "/healthz").is_ok_and(|r| r.status == 200)
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return self;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("metricspool exited at start: {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("metricspool not ready: {}", self.log());
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY-free: `kill -TERM` through the shell tool keeps this crate free of libc.
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if t0.elapsed() > timeout {
                let _ = child.kill();
                panic!("metricspool did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A request with headers.
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http::request_with(
            method,
            self.port,
            path,
            headers,
            body,
            Duration::from_secs(60),
        )
        .expect("the daemon answers")
    }

    /// POST with `Authorization: Bearer <token>`.
    pub fn post(&self, path: &str, token: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {token}");
        self.req("POST", path, &[("Authorization", &auth)], body)
    }

    /// The admin API's status JSON.
    pub fn status(&self) -> super::json::Json {
        let auth = format!("Bearer {TOKEN_ADMIN}");
        let r = self.req("GET", "/admin/status", &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "{}", r.body);
        super::json::Json::parse(&r.body).expect("status JSON")
    }

    /// A tenant's log end offset (samples stored), from the admin API.
    pub fn stored(&self, tenant: &str) -> u64 {
        let s = self.status();
        s.get("tenants")
            .items()
            .iter()
            .find(|t| t.get("tenant").str() == Some(tenant))
            .and_then(|t| t.get("end_offset").i64())
            .map_or(0, |n| n as u64)
    }

    /// Runs the binary with `args` (e.g. `dump`), returning (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(args, Some(&self.config))
    }
}

/// Runs `metricspool args... [--config config]`.
pub fn run_cli(args: &[&str], config: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricspool"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().expect("run metricspool");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.kill();
    }
}
