//! The data model: a series is a metric name plus sorted labels; a sample is a timestamp in
//! milliseconds and an `f64`; a batch groups samples by series and keeps each series' kind.

use std::sync::Arc;

use crate::error::InvalidInput;

/// Longest metric name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME_LEN: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 4096;
/// Most labels on one series (not counting the metric name).
pub const MAX_LABELS: usize = 128;

/// What a series measures; kept so backends that need it (Datadog, New Relic, OTLP) have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum MetricKind {
    /// Unknown or untyped (Prometheus `untyped`).
    #[default]
    Unknown = 0,
    /// A value that goes up and down.
    Gauge = 1,
    /// A monotonically increasing total.
    Counter = 2,
    /// One series of a histogram (`_bucket`, `_sum`, `_count`).
    Histogram = 3,
    /// One series of a summary (quantiles, `_sum`, `_count`).
    Summary = 4,
}

impl MetricKind {
    /// The kind for a stored byte, if it is one.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Unknown,
            1 => Self::Gauge,
            2 => Self::Counter,
            3 => Self::Histogram,
            4 => Self::Summary,
            _ => return None,
        })
    }

    /// Lower-case name, as used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

/// One label: a name and a value. The strings are shared (`Arc<str>`): series decoded from
/// one record share every label string they have in common.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub name: Arc<str>,
    /// Label value, any UTF-8 up to [`MAX_LABEL_VALUE_LEN`] bytes.
    pub value: Arc<str>,
}

/// A series identity: metric name plus labels sorted by name, validated at construction.
///
/// Shared behind an `Arc`: cloning a series (slicing, sharding, regrouping a batch) costs a
/// reference count, not a copy of every label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Series(std::sync::Arc<SeriesInner>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesInner {
    name: String,
    labels: Vec<Label>,
}

impl Series {
    /// Validates and sorts. Fails on a bad name, a bad or duplicate label, or a length limit.
    pub fn new<N, V>(
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Self, InvalidInput>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let labels = labels
            .into_iter()
            .map(|(n, v)| Label {
                name: Arc::from(n.as_ref()),
                value: Arc::from(v.as_ref()),
            })
            .collect();
        Self::from_labels(name.into(), labels)
    }

    /// Validates and sorts labels whose strings may be shared with other series.
    pub fn from_labels(name: String, mut labels: Vec<Label>) -> Result<Self, InvalidInput> {
        validate_metric_name(&name)?;
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        validate_labels(&name, &labels)?;
        Ok(Self(Arc::new(SeriesInner { name, labels })))
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Labels, sorted by name, without the metric name.
    pub fn labels(&self) -> &[Label] {
        &self.0.labels
    }

    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.0
            .labels
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0.labels[i].value)
    }
}

fn validate_metric_name(name: &str) -> Result<(), InvalidInput> {
    let bad = |reason| InvalidInput::MetricName {
        name: name.chars().take(80).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 256 bytes"));
    }
    let b = name.as_bytes();
    let first_ok = b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':';
    let rest_ok = b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':');
    if !first_ok || !rest_ok {
        return Err(bad("it must match [a-zA-Z_:][a-zA-Z0-9_:]*"));
    }
    Ok(())
}

fn validate_labels(metric: &str, labels: &[Label]) -> Result<(), InvalidInput> {
    if labels.len() > MAX_LABELS {
        return Err(InvalidInput::Label {
            metric: metric.to_owned(),
            label: String::new(),
            reason: "more than 128 labels",
        });
    }
    for (i, l) in labels.iter().enumerate() {
        let bad = |reason| InvalidInput::Label {
            metric: metric.to_owned(),
            label: l.name.chars().take(80).collect(),
            reason,
        };
        if let Some(reason) = label_name_problem(&l.name) {
            return Err(bad(reason));
        }
        if l.value.len() > MAX_LABEL_VALUE_LEN {
            return Err(bad("the value is longer than 4096 bytes"));
        }
        if i > 0 && labels[i - 1].name == l.name {
            return Err(bad("the label name appears twice"));
        }
    }
    Ok(())
}

pub(crate) fn label_name_problem(name: &str) -> Option<&'static str> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Some("the label name is empty");
    }
    if b.len() > MAX_LABEL_NAME_LEN {
        return Some("the label name is longer than 256 bytes");
    }
    let first_ok = b[0].is_ascii_alphabetic() || b[0] == b'_';
    let rest_ok = b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !first_ok || !rest_ok {
        return Some("the label name must match [a-zA-Z_][a-zA-Z0-9_]*");
    }
    if name == "__name__" {
        return Some("__name__ is the metric name, not a label");
    }
    None
}

/// One observation: timestamp in milliseconds since the Unix epoch, and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub timestamp_ms: i64,
    /// The value. NaN is allowed (Prometheus staleness markers are NaN).
    pub value: f64,
}

impl Sample {
    /// A sample at `timestamp_ms` with `value`.
    pub fn new(timestamp_ms: i64, value: f64) -> Self {
        Self {
            timestamp_ms,
            value,
        }
    }

    /// Bitwise equality: NaN equals the same NaN, so stored and read samples compare exactly.
    pub fn same_bits(&self, other: &Sample) -> bool {
        self.timestamp_ms == other.timestamp_ms && self.value.to_bits() == other.value.to_bits()
    }
}

/// The samples of one series in a batch, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series.
    pub series: Series,
    /// Its kind.
    pub kind: MetricKind,
    /// Its samples (at least one).
    pub samples: Vec<Sample>,
}

/// What one append stores: samples grouped by series. Offsets are given to samples in
/// iteration order: every sample of the first series, then of the second, and so on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    entries: Vec<SeriesSamples>,
    samples: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples of `series`. Empty `samples` are ignored.
    pub fn push(&mut self, series: Series, kind: MetricKind, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        self.samples += samples.len();
        self.entries.push(SeriesSamples {
            series,
            kind,
            samples,
        });
    }

    /// Adds one sample of `series`.
    pub fn push_one(&mut self, series: Series, kind: MetricKind, sample: Sample) {
        self.push(series, kind, vec![sample]);
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The entries, in offset order.
    pub fn entries(&self) -> &[SeriesSamples] {
        &self.entries
    }

    /// Consumes the batch into its entries.
    pub fn into_entries(self) -> Vec<SeriesSamples> {
        self.entries
    }

    /// Smallest and largest timestamp, if not empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let mut it = self
            .entries
            .iter()
            .flat_map(|e| e.samples.iter().map(|s| s.timestamp_ms));
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t))))
    }

    /// Every sample with its series, flattened in offset order.
    pub fn iter(&self) -> impl Iterator<Item = (&Series, MetricKind, Sample)> {
        self.entries
            .iter()
            .flat_map(|e| e.samples.iter().map(move |s| (&e.series, e.kind, *s)))
    }

    /// The samples at flattened positions `[from, to)`, regrouped by series.
    pub fn slice(&self, from: usize, to: usize) -> Batch {
        let mut out = Batch::new();
        let mut pos = 0usize;
        for e in &self.entries {
            let end = pos + e.samples.len();
            let lo = from.max(pos);
            let hi = to.min(end);
            if lo < hi {
                out.push(
                    e.series.clone(),
                    e.kind,
                    e.samples[lo - pos..hi - pos].to_vec(),
                );
            }
            pos = end;
            if pos >= to {
                break;
            }
        }
        out
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: Batch) {
        for e in other.entries {
            self.push(e.series, e.kind, e.samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_duplicates_refused() {
        let s = Series::new("up", [("job", "a"), ("instance", "b")]).expect("valid");
        assert_eq!(&*s.labels()[0].name, "instance");
        assert_eq!(s.label("job"), Some("a"));
        assert!(Series::new("up", [("a", "1"), ("a", "2")]).is_err());
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(Series::new("node:cpu_seconds_total", [("a", "1")]).is_ok());
        for bad in ["", "1abc", "a-b", "a b", "é"] {
            assert!(
                Series::new(bad, Vec::<(&str, &str)>::new()).is_err(),
                "{bad:?}"
            );
        }
        for bad in ["", "1a", "a:b", "__name__", "a-b"] {
            assert!(Series::new("m", [(bad, "v")]).is_err(), "label {bad:?}");
        }
        assert!(Series::new("m", [("a", "v".repeat(4097))]).is_err());
    }

    #[test]
    fn slice_regroups_by_series() {
        let a = Series::new("a", Vec::<(&str, &str)>::new()).expect("valid");
        let b = Series::new("b", Vec::<(&str, &str)>::new()).expect("valid");
        let mut batch = Batch::new();
        batch.push(
            a,
            MetricKind::Gauge,
            vec![Sample::new(1, 1.0), Sample::new(2, 2.0)],
        );
        batch.push(b, MetricKind::Counter, vec![Sample::new(3, 3.0)]);
        let s = batch.slice(1, 3);
        assert_eq!(s.sample_count(), 2);
        assert_eq!(s.entries()[0].samples, vec![Sample::new(2, 2.0)]);
        assert_eq!(s.entries()[1].series.name(), "b");
    }
}
