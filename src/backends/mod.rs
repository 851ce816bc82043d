//! Backends: where forwarders deliver batches. One file per backend, all behind [`Backend`],
//! which a user can implement for a custom exporter.
//!
//! A backend encodes a batch deterministically (the same batch gives the same request bytes,
//! so a resend after a crash is byte-identical) and classifies every answer as delivered,
//! retry, or rejected. Retrying, backoff, rate limiting, splitting on "too large" and dead
//! letters are the forwarder's job (`crate::forward`), not the backend's.

#[cfg(feature = "http")]
pub mod datadog;
#[cfg(feature = "http")]
pub mod elasticsearch;
pub mod file;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod http_generic;
#[cfg(feature = "http")]
pub mod influx;
#[cfg(any(feature = "nats", feature = "mqtt"))]
pub mod message;
#[cfg(feature = "http")]
pub mod mimir;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "http")]
pub mod newrelic;
#[cfg(feature = "http")]
pub mod otlp;
#[cfg(feature = "http")]
pub mod prometheus;
#[cfg(feature = "http")]
pub mod splunk;
#[cfg(all(test, feature = "http"))]
mod testserver;
#[cfg(feature = "http")]
pub mod victoriametrics;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use crate::sample::Batch;
use crate::tenant::TenantId;

/// A boxed future, as [`Backend::send`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to a backend: part of a tenant's log.
#[derive(Debug, Clone)]
pub struct SendRequest<'a> {
    /// The tenant the samples belong to.
    pub tenant: &'a TenantId,
    /// The samples, in offset order.
    pub batch: &'a Batch,
    /// The log offsets the batch was read from (`[start, end)` of the forwarder's batch;
    /// a shard or split part carries the whole batch's range plus `part`).
    pub offsets: Range<u64>,
    /// Which part of the batch this is when it was sharded or split, `(index, of)`; `(0, 1)`
    /// for a whole batch. With `offsets` it makes a deterministic batch id
    /// (idempotency keys, message ids).
    pub part: (u32, u32),
    /// True when this exact request may already have been delivered: a resend of a batch
    /// found in flight after a restart, or a retry after an ambiguous failure (timeout,
    /// connection lost after sending).
    pub resend: bool,
}

impl SendRequest<'_> {
    /// A stable id for this request: tenant, offset range and part.
    pub fn batch_id(&self) -> String {
        format!(
            "{}-{}-{}-{}of{}",
            self.tenant, self.offsets.start, self.offsets.end, self.part.0, self.part.1
        )
    }
}

/// Why a send should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// Could not connect, or the connection broke.
    Network,
    /// No answer in time.
    Timeout,
    /// 429 Too Many Requests (or the backend's equivalent).
    RateLimited,
    /// A 5xx answer (or the backend's equivalent).
    ServerError,
}

impl RetryReason {
    /// Every reason, for exporting counters.
    pub const ALL: [RetryReason; 4] = [
        Self::Network,
        Self::Timeout,
        Self::RateLimited,
        Self::ServerError,
    ];

    /// Stable lower-case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
        }
    }

    /// True when the backend may have processed the request although no success came back.
    pub fn is_ambiguous(self) -> bool {
        matches!(self, Self::Network | Self::Timeout)
    }
}

/// What kind of permanent rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectKind {
    /// Bad data, bad credentials, unknown path...: send it to the dead-letter log.
    Permanent,
    /// "Out of order" / "duplicate sample": on a resend this means already delivered; on a
    /// first attempt it is a dead letter.
    Duplicate,
    /// The request is too large (413 or the backend's limit): split it and send the halves.
    TooLarge,
    /// Part of the batch was written and the rest refused (Influx "partial write"): the
    /// refused part cannot be told apart, so the batch goes to the dead-letter log marked
    /// partial.
    Partial,
}

/// The classified outcome of one send.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend acknowledged the request.
    Delivered {
        /// Request body bytes sent (after compression).
        bytes: u64,
        /// Samples the backend cannot represent (NaN or infinite values for InfluxDB) that
        /// were left out of the request; the forwarder counts and logs them.
        skipped: u64,
    },
    /// Try again later.
    Retry {
        /// Why.
        reason: RetryReason,
        /// The backend's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
        /// The status and the first part of the body, for logs.
        detail: String,
    },
    /// The backend refused the request; retrying the same bytes cannot help.
    Rejected {
        /// Which kind of refusal.
        kind: RejectKind,
        /// HTTP status, if any.
        status: Option<u16>,
        /// The backend's reason, for the dead-letter log.
        reason: String,
    },
}

/// A destination for a tenant's samples.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The backend type, e.g. `"prometheus"`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// True when the backend stores samples older than ones it already holds for the same
    /// series (VictoriaMetrics, InfluxDB). Prometheus-family backends without an
    /// out-of-order window return false: the forwarder then keeps per-series order.
    fn accepts_out_of_order(&self) -> bool {
        false
    }

    /// Sends one request and classifies the answer. Must not retry by itself.
    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome>;
}

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/backend_answers.rs`): the decoders
/// of what backends answer. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Elasticsearch / OpenSearch `_bulk` response parsing, for a request of `sent` items.
    #[cfg(feature = "http")]
    pub fn elasticsearch_bulk_response(body: &[u8], sent: usize) -> bool {
        super::elasticsearch::parse_response(body, sent).is_ok()
    }

    /// OTLP `ExportMetricsServiceResponse` and `google.rpc.Status` decoding.
    #[cfg(feature = "http")]
    pub fn otlp_response(body: &[u8]) -> bool {
        super::otlp::decode_answer(body)
    }

    /// MQTT frames from a broker, split and decoded as the connection reader does.
    #[cfg(feature = "mqtt")]
    pub fn mqtt_frames(bytes: &[u8]) -> usize {
        super::mqtt::decode_all(bytes)
    }
}
