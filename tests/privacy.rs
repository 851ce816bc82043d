//! Privacy rules end to end: a hashed or dropped label value never reaches the disk, and what
//! is read back carries the pseudonym.

use std::path::Path;

use metricspool::privacy::{Privacy, PrivacyAction, PrivacyRule};
use metricspool::{
    Batch, MasterKey, MetricKind, ReadLimits, Sample, Series, Spool, SpoolConfig, StartAt, TenantId,
};

const SECRETS: [&str; 4] = [
    "alice@example.com",
    "bob.the.builder@example.org",
    "alice.private@mail.example",
    "carol+metrics@example.net",
];

fn rules() -> Vec<PrivacyRule> {
    vec![
        PrivacyRule {
            label: "user_id".into(),
            action: PrivacyAction::Hash,
        },
        PrivacyRule {
            label: "email".into(),
            action: PrivacyAction::Drop,
        },
    ]
}

/// Logins of users identified by e-mail addresses, in `user_id` and `email`.
fn logins() -> Batch {
    let mut b = Batch::new();
    for (i, pair) in SECRETS.chunks(2).enumerate() {
        let s = Series::new(
            "logins_total",
            [("user_id", pair[0]), ("email", pair[1]), ("app", "web")],
        )
        .expect("valid series");
        b.push_one(
            s,
            MetricKind::Counter,
            Sample::new(1_700_000_000_000 + i as i64, 1.0),
        );
    }
    b
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn hashed_and_dropped_label_values_never_reach_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = MasterKey::generate().expect("random key");
    let id = TenantId::new("edge-1").expect("valid tenant");
    let privacy = Privacy::new(&rules(), master.pseudonym_key(&id)).expect("valid rules");

    let spool = Spool::open(SpoolConfig::new(dir.path(), master.clone())).expect("opens");
    let tenant = spool.tenant(&id).expect("tenant");
    tenant
        .register_consumer("check", StartAt::Earliest)
        .expect("registers");
    tenant
        .append_blocking(&privacy.apply(logins()))
        .expect("appends");

    // (a) What is read back carries the pseudonym and no e-mail label.
    let read = tenant.read_from(0, ReadLimits::default()).expect("reads");
    assert_eq!(read.batch.sample_count(), 2);
    for (i, (series, kind, _)) in read.batch.iter().enumerate() {
        assert_eq!(kind, MetricKind::Counter);
        assert_eq!(series.label("email"), None);
        assert_eq!(series.label("app"), Some("web"));
        let user = series.label("user_id").expect("hashed, not dropped");
        assert_eq!(user, privacy.pseudonym(SECRETS[2 * i]));
        assert!(user.starts_with("h_") && user.len() == 34, "{user}");
    }
    let decoded = format!("{:?}", read.batch);
    for secret in SECRETS {
        assert!(!decoded.contains(secret), "{secret} in the decoded batch");
    }
    spool.close().expect("closes");

    // (b) No file under the data directory holds a plaintext value (segments are sealed,
    // but the check does not rely on that: the values must never have been handed over).
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(
        all.iter()
            .any(|p| p.extension().is_some_and(|e| e == "seg")),
        "{all:?}"
    );
    for path in &all {
        let bytes = std::fs::read(path).expect("readable file");
        for secret in SECRETS {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} found in {}", path.display());
        }
    }

    // Pseudonyms are stable across reopen: a new `Privacy` from the same master key gives the
    // same value, so the series stays one series.
    let again = Privacy::new(&rules(), master.pseudonym_key(&id)).expect("valid rules");
    assert_eq!(again.pseudonym(SECRETS[0]), privacy.pseudonym(SECRETS[0]));
}
