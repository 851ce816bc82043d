//! The `metricspool` binary: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metricspool::{MasterKey, ReadLimits, Spool, SpoolConfig};

#[derive(Parser)]
#[command(version, about = "Durable, encrypted, multi-tenant metrics buffer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every tenant's segments: offsets, time ranges, key ids, sizes.
    Inspect(DataArgs),
    /// Read and authenticate every record; exit 1 if anything is wrong.
    Verify(DataArgs),
    /// Write a new random master key to a new file (mode 0600).
    KeysGenerate {
        /// Where to write the key.
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct DataArgs {
    /// The data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// File holding the master key (64 hex digits).
    #[arg(long, conflicts_with = "key_env")]
    key_file: Option<PathBuf>,
    /// Environment variable holding the master key.
    #[arg(long, default_value = "METRICSPOOL_MASTER_KEY")]
    key_env: String,
}

impl DataArgs {
    fn open(&self) -> metricspool::Result<Spool> {
        let key = match &self.key_file {
            Some(p) => MasterKey::from_file(p)?,
            None => MasterKey::from_env(&self.key_env)?,
        };
        Spool::open(SpoolConfig::new(&self.data_dir, key))
    }
}

fn inspect(args: &DataArgs) -> metricspool::Result<bool> {
    let spool = args.open()?;
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

fn verify(args: &DataArgs) -> metricspool::Result<bool> {
    let spool = args.open()?;
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
        while at < end {
            let b = t.read_from(
                at,
                ReadLimits {
                    max_samples: 1 << 20,
                    max_bytes: 64 << 20,
                },
            )?;
            samples += b.batch.sample_count() as u64;
            for s in &b.skipped {
                ok = false;
                println!("{id}: offsets {:?} unreadable: {:?}", s.range, s.reason);
            }
            if b.end <= at {
                break;
            }
            at = b.end;
        }
        println!("tenant {id}: {samples} samples verified");
    }
    spool.close()?;
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a),
        Command::KeysGenerate { path } => MasterKey::generate()
            .and_then(|k| k.write_new_file(path))
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
