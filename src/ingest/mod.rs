//! Ingest decoders (interface only until the ingest branch lands; replaced by it).

use crate::error::InvalidInput;
use crate::sample::Batch;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest decompressed body.
    pub max_body_bytes: usize,
    /// Most samples per request.
    pub max_samples: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_samples: 1_000_000,
        }
    }
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Body over the limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Too many samples.
    #[error("more than {limit} samples")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// Malformed.
    #[error("malformed {format}: {message}")]
    Malformed {
        /// Format.
        format: &'static str,
        /// First problem.
        message: String,
    },
    /// Unsupported content encoding.
    #[error("unsupported content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// Invalid names or values.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

impl IngestError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } | Self::TooManySamples { .. } => 413,
            Self::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }
}

/// Timestamp precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// ns
    Ns,
    /// us
    Us,
    /// ms
    Ms,
    /// s
    S,
}

impl Precision {
    /// Parses a precision parameter.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "ns" | "n" => Some(Self::Ns),
            "us" | "u" => Some(Self::Us),
            "ms" => Some(Self::Ms),
            "s" => Some(Self::S),
            _ => None,
        }
    }
}

fn todo(format: &'static str) -> IngestError {
    IngestError::Malformed {
        format,
        message: "decoder not built yet".into(),
    }
}

/// Decompresses a body.
pub fn decompress<'a>(
    body: &'a [u8],
    encoding: &str,
    _limit: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, IngestError> {
    match encoding {
        "" | "identity" => Ok(body.into()),
        other => Err(IngestError::UnsupportedEncoding(other.into())),
    }
}

/// Remote write.
pub fn decode_remote_write(_body: &[u8], _limits: &IngestLimits) -> Result<Batch, IngestError> {
    Err(todo("remote write"))
}

/// Line protocol.
pub fn decode_line_protocol(
    _body: &[u8],
    _precision: Precision,
    _now_ms: i64,
    _limits: &IngestLimits,
) -> Result<Batch, IngestError> {
    Err(todo("line protocol"))
}

/// JSON push.
pub fn decode_json_push(
    _body: &[u8],
    _now_ms: i64,
    _limits: &IngestLimits,
) -> Result<Batch, IngestError> {
    Err(todo("json"))
}
