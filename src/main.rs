//! The `metricspool` binary: the daemon and the operator's tools.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: decoding a remote-write request allocates a few
/// dozen strings per series and frees them soon after, which glibc's allocator handles
/// several times slower across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use indicatif::{ProgressBar, ProgressStyle};
use metricspool::daemon::settings::{LogFormat, Settings};
use metricspool::daemon::{self, Daemon, DaemonError, DataDirLock};
use metricspool::replay::Bound;
use metricspool::{ReadLimits, Spool, TenantId};

#[derive(Parser)]
#[command(version, about = "Durable, encrypted, multi-tenant metrics buffer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults without --config: data in ./metricspool-data,
    /// a file backend, 127.0.0.1:9465).
    Serve(ConfigArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Per tenant: log size, offsets, time range, per-backend lag and dead letters.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Ask a running daemon's admin API instead of reading the data directory.
        #[arg(long)]
        url: Option<String>,
        /// Environment variable holding the admin token (with --url).
        #[arg(long, default_value = "METRICSPOOL_ADMIN_TOKEN")]
        admin_token_env: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every tenant's segments: offsets, time ranges, key ids, sizes.
    Inspect(ConfigArgs),
    /// Read and authenticate every record; exit 1 if anything is wrong.
    Verify(ConfigArgs),
    /// Decrypt a range of a tenant's log to stdout.
    Dump {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Start: an offset (digits) or an RFC 3339 time. Default: the oldest sample.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive): an offset or an RFC 3339 time. Default: the newest sample.
        #[arg(long)]
        until: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: DumpFormat,
    },
    /// Master and tenant keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a new random tenant or admin token and the SHA-256 to put in the config.
    Token,
    /// Dead-letter logs.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Send a range of a tenant's log to a backend again (docs/replay.md).
    Replay(Box<ReplayCli>),
    /// Tenant data.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ReplayCli {
    #[command(subcommand)]
    command: Option<ReplayCommand>,
    #[command(flatten)]
    run: ReplayArgs,
}

#[derive(clap::Args, Clone)]
struct DaemonArgs {
    /// Use a running daemon's admin API, e.g. http://127.0.0.1:9465.
    #[arg(long)]
    url: Option<String>,
    /// Environment variable holding the admin token (with --url).
    #[arg(long, default_value = "METRICSPOOL_ADMIN_TOKEN")]
    admin_token_env: String,
}

#[derive(clap::Args, Clone)]
struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    daemon: DaemonArgs,
    /// The tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The backend (its name in [backends]).
    #[arg(long)]
    to: Option<String>,
    /// Start: an offset (digits) or an RFC 3339 time. Default: the oldest sample.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive): an offset or an RFC 3339 time. Default: the log end now.
    #[arg(long)]
    until: Option<String>,
    /// Job name (rerun with the same name and range to resume). Default: <backend>-<ms>.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum ReplayCommand {
    /// Every replay job of a tenant with its progress (JSON lines).
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        daemon: DaemonArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Stop and cancel a replay job; its cursor is removed.
    Cancel {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        daemon: DaemonArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The job.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Crypto-shred a tenant (daemon stopped): its keys first, then its log, cursors, dead
    /// letters, replay jobs and the file backend's default export.
    Erase {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant.
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: every problem with its field path and line.
    Check {
        /// The file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new random master key to a new file (mode 0600).
    Generate {
        /// Where to write the key.
        path: PathBuf,
    },
    /// Make a tenant's new segments use a new data key (daemon stopped).
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Remove an old data key (daemon stopped); refused while retained data uses it.
    Retire {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The key id.
        #[arg(long)]
        key_id: u32,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List a tenant's dead letters for one backend (daemon stopped).
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The backend name.
        #[arg(long)]
        backend: String,
    },
    /// Send dead letters again through a running daemon's admin API.
    Redrive {
        /// The daemon, e.g. http://127.0.0.1:9465.
        #[arg(long)]
        url: String,
        /// Environment variable holding the admin token.
        #[arg(long, default_value = "METRICSPOOL_ADMIN_TOKEN")]
        admin_token_env: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The backend name.
        #[arg(long)]
        backend: String,
        /// One dead letter; default all not yet re-driven.
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DumpFormat {
    /// One JSON object per sample (the file backend's layout).
    Jsonl,
    /// OpenMetrics text.
    Openmetrics,
    /// CSV: name,labels,kind,timestamp_ms,value.
    Csv,
}

#[derive(clap::Args, Clone)]
struct ConfigArgs {
    /// Configuration file (TOML). Default: the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides the config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Master key file (overrides the config).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl ConfigArgs {
    fn settings(&self) -> Result<(Settings, String), DaemonError> {
        let (mut s, src) = match &self.config {
            Some(p) => Settings::load(p)?,
            None => (Settings::embedded(), String::new()),
        };
        s.apply_env(|k| std::env::var(k).ok())?;
        if let Some(d) = &self.data_dir {
            s.storage.data_dir = d.clone();
        }
        if let Some(k) = &self.key_file {
            s.keys.master_key_file = Some(k.clone());
            s.keys.master_key_env = None;
        }
        Ok((s, src))
    }

    /// Opens the data directory of a stopped daemon.
    fn open(&self) -> Result<(Spool, DataDirLock), DaemonError> {
        let (s, _) = self.settings()?;
        let lock = DataDirLock::acquire(&s.storage.data_dir).map_err(|e| match e {
            DaemonError::Locked(d) => DaemonError::Io {
                what: format!("{} is in use by a running daemon", d.display()),
                source: std::io::Error::other("use its admin API (--url) or stop it first"),
            },
            other => other,
        })?;
        let key = daemon::master_key(&s)?;
        let spool = Spool::open(daemon::spool_config(&s, key)?)?;
        Ok((spool, lock))
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} offsets ({eta})")
    {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb
}

type Outcome = Result<bool, Box<dyn std::error::Error>>;

fn serve(args: &ConfigArgs) -> Outcome {
    let (settings, src) = args.settings()?;
    init_logging(&settings);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let d = Daemon::start(settings, &src).await?;
        d.serve(daemon::shutdown_signal()).await
    })?;
    Ok(true)
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.logging.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn config_check(path: &std::path::Path) -> Outcome {
    let (settings, src) = match Settings::load(path) {
        Ok(x) => x,
        Err(p) => {
            println!("{p}");
            return Ok(false);
        }
    };
    let problems = settings.check(&src);
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
    }
    Ok(problems.is_empty())
}

fn status(config: &ConfigArgs, url: Option<&str>, token_env: &str, json: bool) -> Outcome {
    let value = match url {
        Some(url) => admin_get(url, token_env, "/admin/status")?,
        None => {
            let (spool, _lock) = config.open()?;
            let v = daemon::status::collect(&spool, &[]);
            spool.close()?;
            v
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", daemon::status::render_text(&value));
    }
    Ok(true)
}

fn admin_request(
    url: &str,
    token_env: &str,
    path: &str,
    post: bool,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let token =
        std::env::var(token_env).map_err(|_| format!("set {token_env} to the admin token"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = metricspool::backends::http::client(std::time::Duration::from_secs(60));
        let full = format!("{}{path}", url.trim_end_matches('/'));
        let req = if post {
            client.post(&full)
        } else {
            client.get(&full)
        };
        let resp = req.bearer_auth(token).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("{full}: {status}: {}", text.trim()).into());
        }
        Ok(serde_json::from_str(&text)?)
    })
}

fn admin_get(
    url: &str,
    token_env: &str,
    path: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    admin_request(url, token_env, path, false)
}

fn inspect(args: &ConfigArgs) -> Outcome {
    let (spool, _lock) = args.open()?;
    for id in spool.tenants() {
        let t = spool.tenant(&id)?;
        println!("tenant {id}");
        for s in t.wal().segments() {
            println!(
                "  {:>20}..{:<20} ts {:?}..{:?} key {} {} bytes{}",
                s.base_offset,
                s.end_offset,
                s.min_ts,
                s.max_ts,
                s.key_id,
                s.bytes,
                if s.sealed_ms.is_some() { "" } else { " (open)" }
            );
        }
    }
    for r in spool.recovery_reports().iter().filter(|r| !r.is_clean()) {
        println!("recovery of {}: {:?}", r.tenant, r.events);
    }
    spool.close()?;
    Ok(true)
}

const READ: ReadLimits = ReadLimits {
    max_samples: 1 << 20,
    max_bytes: 64 << 20,
};

fn verify(args: &ConfigArgs) -> Outcome {
    let (spool, _lock) = args.open()?;
    let mut ok = true;
    for r in spool.recovery_reports() {
        for e in &r.events {
            if matches!(
                e,
                metricspool::RecoveryEvent::CorruptRecordSkipped { .. }
                    | metricspool::RecoveryEvent::SegmentQuarantined { .. }
            ) {
                ok = false;
                println!("{}: {e:?}", r.tenant);
            }
        }
    }
    for id in spool.tenants() {
        let t = spool.tenant(&id)?;
        let (mut at, end, mut samples) = (t.wal().first_offset(), t.wal().end_offset(), 0u64);
        let pb = progress(end - at, &format!("verify {id}"));
        while at < end {
            let b = t.read_from(at, READ)?;
            samples += b.batch.sample_count() as u64;
            for s in &b.skipped {
                ok = false;
                pb.suspend(|| println!("{id}: offsets {:?} unreadable: {:?}", s.range, s.reason));
            }
            if b.end <= at {
                break;
            }
            pb.inc(b.end - at);
            at = b.end;
        }
        pb.finish_and_clear();
        println!("tenant {id}: {samples} samples verified");
    }
    spool.close()?;
    Ok(ok)
}

fn dump(
    config: &ConfigArgs,
    tenant: &str,
    from: Option<&str>,
    until: Option<&str>,
    format: DumpFormat,
) -> Outcome {
    let id = TenantId::new(tenant)?;
    let (from, until) = (
        from.map(Bound::parse).transpose()?,
        until.map(Bound::parse).transpose()?,
    );
    let (spool, _lock) = config.open()?;
    if !spool.tenants().contains(&id) {
        if spool.keyring().was_erased(&id) {
            return Err(format!(
                "the key of tenant {id} was erased (metricspool tenant erase): its data cannot be read"
            )
            .into());
        }
        return Err(format!("no tenant {id} in the data directory").into());
    }
    let t = spool.tenant(&id)?;
    let (mut at, mut end) = (t.wal().first_offset(), t.wal().end_offset());
    let (mut from_ts, mut until_ts) = (i64::MIN, i64::MAX);
    match from {
        Some(Bound::Offset(o)) => at = at.max(o),
        Some(Bound::Time(ms)) => from_ts = ms,
        None => {}
    }
    match until {
        Some(Bound::Offset(o)) => end = end.min(o),
        Some(Bound::Time(ms)) => until_ts = ms,
        None => {}
    }
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    if matches!(format, DumpFormat::Csv) {
        writeln!(out, "name,labels,kind,timestamp_ms,value")?;
    }
    let pb = progress(end.saturating_sub(at), &format!("dump {id}"));
    while at < end {
        let b = t.wal().read_time_range(from_ts, until_ts, at, READ)?;
        if let Some(s) = b.skipped.first() {
            return Err(format!("offsets {:?} cannot be read: {:?}", s.range, s.reason).into());
        }
        // Records straddling `end` are cut by offset.
        let mut batch = b.batch;
        if b.end > end {
            batch = batch.slice(
                0,
                (batch.sample_count() as u64).saturating_sub(b.end - end) as usize,
            );
        }
        write_dump(&mut out, &id, &batch, format)?;
        if b.end <= at {
            break;
        }
        pb.inc(b.end - at);
        at = b.end;
    }
    pb.finish_and_clear();
    if matches!(format, DumpFormat::Openmetrics) {
        writeln!(out, "# EOF")?;
    }
    out.flush()?;
    spool.close()?;
    Ok(true)
}

fn write_dump(
    out: &mut impl Write,
    id: &TenantId,
    batch: &metricspool::Batch,
    format: DumpFormat,
) -> std::io::Result<()> {
    use metricspool::backends::file::{json_f64, json_lines, json_str};
    match format {
        DumpFormat::Jsonl => out.write_all(json_lines("dump", id, batch).as_bytes()),
        DumpFormat::Openmetrics | DumpFormat::Csv => {
            for e in batch.entries() {
                let labels: Vec<String> = e
                    .series
                    .labels()
                    .iter()
                    .map(|l| format!("{}={}", l.name, json_str(&l.value)))
                    .collect();
                for s in &e.samples {
                    if matches!(format, DumpFormat::Csv) {
                        let labels = labels.join(",").replace('"', "\"\"");
                        writeln!(
                            out,
                            "{},\"{labels}\",{},{},{}",
                            e.series.name(),
                            e.kind.as_str(),
                            s.timestamp_ms,
                            json_f64(s.value).trim_matches('"')
                        )?;
                    } else {
                        let v = json_f64(s.value);
                        let ts = s.timestamp_ms as f64 / 1000.0;
                        writeln!(
                            out,
                            "{}{{{}}} {} {ts}",
                            e.series.name(),
                            labels.join(","),
                            v.trim_matches('"')
                        )?;
                    }
                }
            }
            Ok(())
        }
    }
}

fn keys_rotate(config: &ConfigArgs, tenant: &str) -> Outcome {
    let id = TenantId::new(tenant)?;
    let (spool, _lock) = config.open()?;
    let key_id = spool.rotate_key(&id)?;
    println!("tenant {id}: new segments use key {key_id}");
    spool.close()?;
    Ok(true)
}

fn dlq_list(config: &ConfigArgs, tenant: &str, backend: &str) -> Outcome {
    let id = TenantId::new(tenant)?;
    let (spool, _lock) = config.open()?;
    let t = spool.tenant(&id)?;
    for d in t.dead_letters(backend)?.list()? {
        println!("{}", daemon::status::dead_letter_json(&d));
    }
    spool.close()?;
    Ok(true)
}

fn keys_retire(config: &ConfigArgs, tenant: &str, key_id: u32) -> Outcome {
    let id = TenantId::new(tenant)?;
    let (spool, _lock) = config.open()?;
    let r = spool.retire_key(&id, key_id);
    spool.close()?;
    r?;
    println!("tenant {id}: key {key_id} retired");
    Ok(true)
}

fn tenant_erase(config: &ConfigArgs, tenant: &str) -> Outcome {
    let id = TenantId::new(tenant)?;
    let (settings, _) = config.settings()?;
    let (spool, _lock) = config.open()?;
    if !spool.tenants().contains(&id) && !spool.keyring().exists(&id) {
        return Err(format!("no tenant {id} in the data directory").into());
    }
    spool.erase_tenant(&id)?;
    spool.close()?;
    // The file backend's default export is plaintext under the data directory.
    let export = settings
        .storage
        .data_dir
        .join("export")
        .join(format!("{id}.jsonl"));
    if export.exists() {
        std::fs::remove_file(&export)?;
        println!("removed {}", export.display());
    }
    println!("tenant {id}: keys erased, then data deleted");
    Ok(true)
}

fn replay_cli(r: &ReplayCli) -> Outcome {
    match &r.command {
        None => replay_run(&r.run),
        Some(ReplayCommand::Status {
            config,
            daemon,
            tenant,
        }) => replay_status(config, daemon, tenant),
        Some(ReplayCommand::Cancel {
            config,
            daemon,
            tenant,
            name,
        }) => replay_cancel(config, daemon, tenant, name),
    }
}

fn query(pairs: &[(&str, Option<&String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", url_escape(v))))
        .collect();
    q.join("&")
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn replay_run(a: &ReplayArgs) -> Outcome {
    use metricspool::replay::{self, ReplayRequest, ReplayRun};
    let tenant = a.tenant.as_deref().ok_or("--tenant is required")?;
    let to = a.to.clone().ok_or("--to BACKEND is required")?;
    let id = TenantId::new(tenant)?;
    if let Some(url) = &a.daemon.url {
        let q = query(&[
            ("backend", Some(&to)),
            ("from", a.from.as_ref()),
            ("until", a.until.as_ref()),
            ("name", a.name.as_ref()),
        ]);
        let path = format!("/admin/tenants/{id}/replay?{q}");
        println!(
            "{}",
            admin_request(url, &a.daemon.admin_token_env, &path, true)?
        );
        return Ok(true);
    }
    let req = ReplayRequest {
        name: a.name.clone(),
        backend: to.clone(),
        from: a.from.as_deref().map(Bound::parse).transpose()?,
        until: a.until.as_deref().map(Bound::parse).transpose()?,
    };
    let (settings, src) = a.config.settings()?;
    let table = settings
        .backends
        .get(&to)
        .ok_or_else(|| format!("no backend {to} in [backends]"))?;
    let (spool, _lock) = a.config.open()?;
    if !spool.tenants().contains(&id) {
        return Err(format!("no tenant {id} in the data directory").into());
    }
    let t = spool.tenant(&id)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(async {
        let route = daemon::backends::build(&to, table, &settings, &src)
            .map_err(|p| p.to_string())?;
        let job = replay::create(&t, &req, route.replay_max_age)?;
        if job.too_old_at_start > 0 {
            eprintln!(
                "{} samples (timestamps {:?}) are older than backend {to}'s max_age and will not be sent",
                job.too_old_at_start, job.too_old_range
            );
        }
        let run = ReplayRun::start(Arc::clone(&t), route.backend, &route.config, job.clone())?;
        let pb = progress(job.until.saturating_sub(job.from), &format!("replay {}", job.name));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            daemon::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let done = run
            .run_to_end(|s| pb.set_position(s.committed - s.job.from), stop_rx)
            .await?;
        pb.finish_and_clear();
        Ok::<_, Box<dyn std::error::Error>>((done, job.name))
    })?;
    let finished = done.0.is_some();
    let job = match done {
        (Some(j), _) => j,
        (None, name) => replay::load(&t, &name)?.ok_or("the job file is gone")?,
    };
    println!("{}", serde_json::to_string(&replay::status(&t, &job)?)?);
    drop(t);
    spool.close()?;
    Ok(finished)
}

fn replay_status(config: &ConfigArgs, d: &DaemonArgs, tenant: &str) -> Outcome {
    let id = TenantId::new(tenant)?;
    if let Some(url) = &d.url {
        let v = admin_get(
            url,
            &d.admin_token_env,
            &format!("/admin/tenants/{id}/replay"),
        )?;
        for j in v.as_array().into_iter().flatten() {
            println!("{j}");
        }
        return Ok(true);
    }
    let (spool, _lock) = config.open()?;
    let t = spool.tenant(&id)?;
    for job in metricspool::replay::list(&t)? {
        println!(
            "{}",
            serde_json::to_string(&metricspool::replay::status(&t, &job)?)?
        );
    }
    drop(t);
    spool.close()?;
    Ok(true)
}

fn replay_cancel(config: &ConfigArgs, d: &DaemonArgs, tenant: &str, name: &str) -> Outcome {
    let id = TenantId::new(tenant)?;
    if let Some(url) = &d.url {
        let path = format!("/admin/tenants/{id}/replay/{}/cancel", url_escape(name));
        println!("{}", admin_request(url, &d.admin_token_env, &path, true)?);
        return Ok(true);
    }
    let (spool, _lock) = config.open()?;
    let t = spool.tenant(&id)?;
    let job = metricspool::replay::cancel(&t, name)?;
    println!("{}", serde_json::to_string(&job)?);
    drop(t);
    spool.close()?;
    Ok(true)
}

fn run(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::Replay(r) => replay_cli(r),
        Command::Tenant(TenantCommand::Erase { config, tenant }) => tenant_erase(config, tenant),
        Command::Keys(KeysCommand::Retire {
            config,
            tenant,
            key_id,
        }) => keys_retire(config, tenant, *key_id),
        Command::Serve(a) => serve(a),
        Command::Config(ConfigCommand::Check { config }) => config_check(config),
        Command::Status {
            config,
            url,
            admin_token_env,
            json,
        } => status(config, url.as_deref(), admin_token_env, *json),
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a),
        Command::Dump {
            config,
            tenant,
            from,
            until,
            format,
        } => dump(config, tenant, from.as_deref(), until.as_deref(), *format),
        Command::Keys(KeysCommand::Generate { path }) => {
            metricspool::MasterKey::generate()?.write_new_file(path)?;
            Ok(true)
        }
        Command::Keys(KeysCommand::Rotate { config, tenant }) => keys_rotate(config, tenant),
        Command::Token => {
            let (token, hash) = daemon::new_token()?;
            println!("token:        {token}\ntoken_sha256: {hash}");
            Ok(true)
        }
        Command::Dlq(DlqCommand::List {
            config,
            tenant,
            backend,
        }) => dlq_list(config, tenant, backend),
        Command::Dlq(DlqCommand::Redrive {
            url,
            admin_token_env,
            tenant,
            backend,
            id,
        }) => {
            let path = match id {
                Some(id) => format!("/admin/tenants/{tenant}/dlq/{backend}/redrive?id={id}"),
                None => format!("/admin/tenants/{tenant}/dlq/{backend}/redrive"),
            };
            println!("{}", admin_request(url, admin_token_env, &path, true)?);
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
