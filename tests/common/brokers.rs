//! Real message brokers from the Debian packages (`nats-server` with JetStream, `mosquitto`),
//! each on 127.0.0.1 with a free port and a temp dir. Dropping a [`Broker`] kills the
//! process and removes the dir. A broker can be stopped (SIGTERM) and started again on the
//! same port over the same store (outage tests).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use super::servers::free_port;
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use metricspool::{Batch, MetricKind, Sample, Series, StartAt, Tenant};

use super::{DataSet, http, process};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    Mosquitto,
}

/// A running (or stopped) broker.
#[derive(Debug)]
pub struct Broker {
    pub kind: BrokerKind,
    pub port: u16,
    /// NATS monitoring port (its `/healthz` is the readiness check).
    pub monitor_port: u16,
    program: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
    started: u32,
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("metricspool-broker-")
        .tempdir()
        .expect("a temp dir")
}

impl Broker {
    /// nats-server with JetStream (file store in the temp dir). `extra` is appended to its
    /// config file (e.g. `max_payload: 2048`).
    pub fn nats(extra: &str) -> Self {
        let (dir, port, monitor_port) = (temp_dir(), free_port(), free_port());
        let cfg = dir.path().join("nats.conf");
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\njetstream {{\n  store_dir: \"{}\"\n}}\n{extra}\n",
                dir.path().join("nats-js").display()
            ),
        )
        .expect("write nats.conf");
        Self {
            kind: BrokerKind::Nats,
            port,
            monitor_port,
            program: "nats-server",
            args: vec!["-c".into(), cfg.display().to_string()],
            child: None,
            dir,
            started: 0,
        }
    }

    /// mosquitto with persistence in the temp dir. `extra` is appended to its config; `acl`,
    /// if given, is written to an ACL file that the config names.
    pub fn mosquitto(extra: &str, acl: Option<&str>) -> Self {
        let (dir, port) = (temp_dir(), free_port());
        let store = dir.path().join("mosq");
        std::fs::create_dir_all(&store).expect("create the store dir");
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nlog_dest stdout\n{extra}\n",
            store.display()
        );
        if let Some(acl) = acl {
            let path = dir.path().join("acl");
            std::fs::write(&path, acl).expect("write the ACL file");
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        let cfg = dir.path().join("mosquitto.conf");
        std::fs::write(&cfg, conf).expect("write mosquitto.conf");
        Self {
            kind: BrokerKind::Mosquitto,
            port,
            monitor_port: 0,
            program: "mosquitto",
            args: vec!["-c".into(), cfg.display().to_string()],
            child: None,
            dir,
            started: 0,
        }
    }

    /// `nats://127.0.0.1:<port>` or `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
            BrokerKind::Mosquitto => format!("mqtt://127.0.0.1:{}", self.port),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("broker-{}.log", self.started))
    }

    /// Starts the process and waits until it is ready.
    pub fn start(&mut self) -> &mut Self {
        assert!(self.child.is_none(), "{:?} is already running", self.kind);
        self.started += 1;
        let log = self.log_path();
        let child = self.child.insert(process::spawn_logged(
            self.program,
            &self.args,
            self.dir.path(),
            &log,
        ));
        let (kind, port, monitor_port) = (self.kind, self.port, self.monitor_port);
        process::wait_ready(&kind, child, &log, || ready(kind, port, monitor_port));
        self
    }

    /// Stops the process with SIGTERM (SIGKILL after 15 s); the store stays.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            process::terminate(child);
        }
    }

    /// The end of the current log, for failure messages.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_path())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        process::kill(self.child.take());
    }
}

/// The readiness check: NATS's `/healthz` on the monitoring port, mosquitto's listener.
fn ready(kind: BrokerKind, port: u16, monitor_port: u16) -> bool {
    match kind {
        BrokerKind::Nats => {
            http::request("GET", monitor_port, "/healthz", b"", Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
        }
        BrokerKind::Mosquitto => TcpStream::connect(("127.0.0.1", port)).is_ok(),
    }
}

// ---------------------------------------------------------------------------------------
// What the NATS and MQTT end-to-end tests share
// ---------------------------------------------------------------------------------------

/// A forwarder config for the broker tests: from the earliest offset, batches of at most
/// 500 samples after a 20 ms linger, retries from 50 to 300 ms.
pub fn forwarder_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.start = StartAt::Earliest;
    c.max_samples = 500;
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(20),
    };
    c.backoff = BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_millis(300),
        max_retry_after: Duration::from_secs(5),
    };
    c
}

/// True once the forwarder committed everything the tenant's log holds.
pub fn caught_up(f: &Forwarder, t: &Tenant) -> bool {
    f.stats().committed == t.wal().end_offset()
}

/// Waits up to `secs` until [`caught_up`]; fails the test otherwise.
pub async fn wait_caught_up(f: &Forwarder, t: &Tenant, secs: u64) {
    let done =
        super::wait_until_async(Duration::from_secs(secs), Duration::from_millis(20), || {
            caught_up(f, t)
        })
        .await;
    assert!(
        done.is_some(),
        "the forwarder did not catch up: {:?}",
        f.stats()
    );
}

/// The key [`expected`] files a sample of a message body (`message::encode_json`) under:
/// `name{s=..,g=..,tenant=..}`.
pub fn sample_key(sample: &serde_json::Value) -> String {
    let labels = &sample["labels"];
    format!(
        "{}{{s={},g={},tenant={}}}",
        sample["name"].as_str().expect("name"),
        labels["s"].as_str().unwrap_or_default(),
        labels["g"].as_str().unwrap_or_default(),
        labels["tenant"].as_str().unwrap_or_default(),
    )
}

/// Every sample of the data set: ([`sample_key`], timestamp) to value.
pub fn expected(set: &DataSet) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for s in 0..set.series {
        let key = format!(
            "{}{{s={s},g={},tenant={}}}",
            set.metric,
            s % super::GROUPS,
            set.tenant
        );
        for i in 0..set.per_series {
            out.insert((key.clone(), set.ts(i)), set.value(s, i));
        }
    }
    out
}

/// Ten counters `resend{s="0".."9"}`, one sample each: the batch the resend tests send
/// twice.
pub fn resend_batch() -> Batch {
    let mut b = Batch::new();
    for i in 0..10 {
        let s = Series::new("resend", [("s", i.to_string())]).expect("valid");
        b.push_one(
            s,
            MetricKind::Counter,
            Sample::new(1_700_000_000_000 + i, i as f64),
        );
    }
    b
}
