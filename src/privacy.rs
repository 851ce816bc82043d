//! Privacy rules: per tenant, applied to a batch before it reaches the log, so a label value
//! the rules remove or pseudonymise is never written to disk.
//!
//! Configuration (one table per rule; labels without a rule are kept):
//! ```toml
//! [[tenants.edge-1.privacy]]
//! label = "user_id"
//! action = "hash"
//!
//! [[tenants.edge-1.privacy]]
//! label = "email"
//! action = "drop"
//! ```
//!
//! - `drop` removes the label. Two series that differed only in it become one series; their
//!   samples stay in separate batch entries, which every reader handles.
//! - `hash` replaces the value by a pseudonym: `"h_"` and 32 lower-case hex digits, the
//!   first 16 bytes of HMAC-SHA256 keyed by the tenant's pseudonym key
//!   ([`MasterKey::pseudonym_key`](crate::MasterKey::pseudonym_key)) over the value alone.
//!   The same value gives the same pseudonym in every label and every series of the tenant,
//!   so series stay distinct and joinable; another tenant gets other pseudonyms. An empty
//!   value (Prometheus: "no such label") stays empty.
//! - `keep` is the default and needs no rule.
//!
//! A pseudonym is not anonymisation: whoever holds the master key, or can guess candidate
//! values and query pseudonyms, can link them back. It keeps plaintext off the disk and out
//! of the backends.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::InvalidInput;
use crate::sample::{Batch, Label, Series, label_name_problem};

/// What a rule does with its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyAction {
    /// Leave the label as it is (the default for labels without a rule).
    #[default]
    Keep,
    /// Remove the label.
    Drop,
    /// Replace the value by a keyed pseudonym, `h_` + 32 hex digits.
    Hash,
}

/// One rule: which label, and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRule {
    /// The label name (not `__name__`: the metric name cannot be dropped or hashed).
    pub label: String,
    /// The action.
    pub action: PrivacyAction,
}

/// A tenant's privacy rules, ready to apply.
#[derive(Clone)]
pub struct Privacy {
    /// Rules whose action is not `keep`.
    actions: HashMap<Arc<str>, PrivacyAction>,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("actions", &self.actions)
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// Rules keyed by `key` (the tenant's [`pseudonym_key`](crate::MasterKey::pseudonym_key)).
    /// Refuses a rule on an invalid label name or on `__name__`, and a label named by two
    /// rules.
    pub fn new(rules: &[PrivacyRule], key: [u8; 32]) -> Result<Self, InvalidInput> {
        let mut actions = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for rule in rules {
            let bad = |reason| InvalidInput::PrivacyRule {
                label: rule.label.chars().take(80).collect(),
                reason,
            };
            if let Some(reason) = label_name_problem(&rule.label) {
                return Err(bad(reason));
            }
            if !seen.insert(rule.label.as_str()) {
                return Err(bad("two rules name this label"));
            }
            if rule.action != PrivacyAction::Keep {
                actions.insert(Arc::from(rule.label.as_str()), rule.action);
            }
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .expect("HMAC-SHA256 accepts a 32-byte key");
        Ok(Self { actions, mac })
    }

    /// True when no rule changes anything: [`apply`](Self::apply) returns batches unchanged.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The pseudonym of `value`: `"h_"` + hex of the first 16 bytes of its HMAC.
    pub fn pseudonym(&self, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(34);
        out.push_str("h_");
        for b in &tag[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Applies the rules to every series of `batch`. Samples, kinds and entry order are
    /// unchanged; a batch no rule touches is returned as it came.
    pub fn apply(&self, batch: Batch) -> Batch {
        if self.is_empty() || !batch.entries().iter().any(|e| self.touches(&e.series)) {
            return batch;
        }
        let mut memo = Memo::default();
        let mut out = Batch::new();
        for e in batch.into_entries() {
            let series = self.rewrite(&e.series, &mut memo);
            out.push(series, e.kind, e.samples);
        }
        out
    }

    fn touches(&self, series: &Series) -> bool {
        series
            .labels()
            .iter()
            .any(|l| self.actions.contains_key(&l.name))
    }

    /// The series with the rules applied; the same input series (and value) is rewritten
    /// once per batch.
    fn rewrite(&self, series: &Series, memo: &mut Memo) -> Series {
        if !self.touches(series) {
            return series.clone();
        }
        if let Some(done) = memo.series.get(series) {
            return done.clone();
        }
        let mut labels: Vec<Label> = Vec::with_capacity(series.labels().len());
        for l in series.labels() {
            match self.actions.get(&l.name) {
                Some(PrivacyAction::Drop) => {}
                Some(PrivacyAction::Hash) if !l.value.is_empty() => {
                    let value = memo
                        .values
                        .entry(Arc::clone(&l.value))
                        .or_insert_with(|| Arc::from(self.pseudonym(&l.value)));
                    labels.push(Label {
                        name: Arc::clone(&l.name),
                        value: Arc::clone(value),
                    });
                }
                _ => labels.push(l.clone()),
            }
        }
        // Dropping labels and replacing values by 34 ASCII bytes keeps names, order and
        // lengths within the limits the input series already met.
        let new = Series::from_labels(series.name().to_owned(), labels)
            .expect("removing labels or shortening values keeps a series valid");
        memo.series.insert(series.clone(), new.clone());
        new
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Work shared by the series of one batch.
#[derive(Default)]
struct Memo {
    series: HashMap<Series, Series>,
    values: HashMap<Arc<str>, Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{MetricKind, Sample};

    fn rule(label: &str, action: PrivacyAction) -> PrivacyRule {
        PrivacyRule {
            label: label.into(),
            action,
        }
    }

    fn privacy(rules: &[PrivacyRule]) -> Privacy {
        Privacy::new(rules, [7; 32]).expect("valid rules")
    }

    fn batch(series: &[(&str, &[(&str, &str)])]) -> Batch {
        let mut b = Batch::new();
        for (i, (name, labels)) in series.iter().enumerate() {
            let s = Series::new(*name, labels.iter().copied()).expect("valid");
            b.push_one(s, MetricKind::Counter, Sample::new(i as i64, 1.0));
        }
        b
    }

    #[test]
    fn rules_parse_from_toml_and_typos_are_refused() {
        #[derive(Deserialize)]
        struct Tenant {
            privacy: Vec<PrivacyRule>,
        }
        let t: Tenant = toml::from_str(
            "[[privacy]]\nlabel = \"user_id\"\naction = \"hash\"\n\
             [[privacy]]\nlabel = \"email\"\naction = \"drop\"\n",
        )
        .expect("parses");
        assert_eq!(t.privacy[0], rule("user_id", PrivacyAction::Hash));
        assert_eq!(t.privacy[1].action, PrivacyAction::Drop);
        assert!(
            toml::from_str::<Tenant>("[[privacy]]\nlabel = \"a\"\naction = \"hide\"\n").is_err()
        );
        assert!(
            toml::from_str::<Tenant>("[[privacy]]\nlable = \"a\"\naction = \"drop\"\n").is_err()
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let key = [0u8; 32];
        let twice = [
            rule("a", PrivacyAction::Drop),
            rule("a", PrivacyAction::Hash),
        ];
        let err = Privacy::new(&twice, key).expect_err("duplicate");
        assert!(err.to_string().contains("two rules"), "{err}");
        let err = Privacy::new(&[rule("__name__", PrivacyAction::Drop)], key).expect_err("name");
        assert!(err.to_string().contains("__name__"), "{err}");
        assert!(Privacy::new(&[rule("a-b", PrivacyAction::Drop)], key).is_err());
    }

    #[test]
    fn hash_and_drop_rewrite_labels_and_keep_samples() {
        let p = privacy(&[
            rule("user_id", PrivacyAction::Hash),
            rule("email", PrivacyAction::Drop),
            rule("job", PrivacyAction::Keep),
        ]);
        let b = batch(&[
            (
                "logins",
                &[
                    ("user_id", "alice"),
                    ("email", "a@example.com"),
                    ("job", "web"),
                ],
            ),
            ("logins", &[("user_id", "bob"), ("job", "web")]),
            ("up", &[("job", "web")]),
        ]);
        let out = p.apply(b.clone());
        assert_eq!(out.sample_count(), 3);
        let first = &out.entries()[0].series;
        assert_eq!(first.label("email"), None);
        assert_eq!(first.label("job"), Some("web"));
        let alice = first.label("user_id").expect("kept, hashed");
        assert_eq!(alice, p.pseudonym("alice"));
        assert!(alice.starts_with("h_") && alice.len() == 34);
        assert!(
            alice[2..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(out.entries()[1].series.label("user_id"), Some(alice));
        assert_eq!(out.entries()[2].series, b.entries()[2].series);
        for (x, y) in out.iter().zip(b.iter()) {
            assert_eq!((x.1, x.2), (y.1, y.2));
        }
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys() {
        let a = privacy(&[rule("u", PrivacyAction::Hash)]);
        let b = Privacy::new(&[rule("u", PrivacyAction::Hash)], [8; 32]).expect("valid");
        assert_eq!(a.pseudonym("alice"), a.pseudonym("alice"));
        assert_ne!(a.pseudonym("alice"), a.pseudonym("alicf"));
        assert_ne!(a.pseudonym("alice"), b.pseudonym("alice"));
    }

    #[test]
    fn dropping_a_label_may_merge_series_into_separate_entries() {
        let p = privacy(&[rule("email", PrivacyAction::Drop)]);
        let b = batch(&[("m", &[("email", "a@x")]), ("m", &[("email", "b@x")])]);
        let out = p.apply(b);
        assert_eq!(out.entries().len(), 2);
        assert_eq!(out.entries()[0].series, out.entries()[1].series);
        assert!(out.entries()[0].series.labels().is_empty());
    }

    #[test]
    fn no_rules_or_untouched_batches_pass_through() {
        let b = batch(&[("m", &[("a", "1")]), ("m", &[("u", "")])]);
        assert_eq!(privacy(&[]).apply(b.clone()), b);
        assert!(privacy(&[rule("a", PrivacyAction::Keep)]).is_empty());
        assert_eq!(
            privacy(&[rule("x", PrivacyAction::Hash)]).apply(b.clone()),
            b
        );
        // An empty value means "no label" and stays empty.
        let out = privacy(&[rule("u", PrivacyAction::Hash)]).apply(b);
        assert_eq!(out.entries()[1].series.label("u"), Some(""));
    }
}
