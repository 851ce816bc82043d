//! `Content-Encoding` of a request body: bounded decompression.
//!
//! Streaming decoders (gzip, deflate, zstd) are read through `take(limit + 1)` into a buffer
//! that never grows past `limit + 1` bytes, so a decompression bomb fails with
//! [`IngestError::BodyTooLarge`] after at most `limit + 1` bytes of output. Snappy (block
//! format) announces its decompressed length up front; it is checked before allocating.

use std::borrow::Cow;
use std::io::Read;

use super::IngestError;

/// A `Content-Encoding` this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentEncoding {
    /// No compression (`identity`, or no header).
    Identity,
    /// `gzip` (also `x-gzip`); concatenated members are read as one stream. Needs the
    /// `http` feature.
    Gzip,
    /// `deflate`: zlib-wrapped deflate, as HTTP defines it. Needs the `http` feature.
    Deflate,
    /// `snappy`: the snappy block format (what Prometheus remote write calls snappy), not
    /// the framed format. Needs the `http` feature.
    Snappy,
    /// `zstd`.
    Zstd,
}

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value (case-insensitive, surrounding whitespace
    /// ignored; `""` is identity). A list of several codings is refused, except when all but
    /// one are `identity`.
    pub fn parse(header: &str) -> Result<Self, IngestError> {
        let mut found = Self::Identity;
        for coding in header.split(',').map(str::trim) {
            let this = Self::parse_one(coding)
                .ok_or_else(|| IngestError::UnsupportedEncoding(header.trim().to_owned()))?;
            if this != Self::Identity {
                if found != Self::Identity {
                    return Err(IngestError::UnsupportedEncoding(header.trim().to_owned()));
                }
                found = this;
            }
        }
        Ok(found)
    }

    fn parse_one(coding: &str) -> Option<Self> {
        let c = coding.to_ascii_lowercase();
        Some(match c.as_str() {
            "" | "identity" => Self::Identity,
            "gzip" | "x-gzip" if cfg!(feature = "http") => Self::Gzip,
            "deflate" if cfg!(feature = "http") => Self::Deflate,
            "snappy" if cfg!(feature = "http") => Self::Snappy,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    /// The format name used in error messages.
    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Snappy => "snappy",
            Self::Zstd => "zstd",
        }
    }
}

/// Decodes `body` sent with `Content-Encoding: encoding` (`""` when the header is absent).
///
/// The result is at most `limit` bytes: a larger output fails with
/// [`IngestError::BodyTooLarge`] as soon as byte `limit + 1` is produced, and no buffer larger
/// than `limit + 1` bytes is ever allocated. An identity body is returned as is (borrowed).
/// Errors: [`IngestError::UnsupportedEncoding`] (415) for an unknown coding,
/// [`IngestError::Malformed`] for corrupt compressed data.
pub fn decompress<'a>(
    body: &'a [u8],
    encoding: &str,
    limit: usize,
) -> Result<Cow<'a, [u8]>, IngestError> {
    let encoding = ContentEncoding::parse(encoding)?;
    let out = match encoding {
        ContentEncoding::Identity => {
            if body.len() > limit {
                return Err(IngestError::BodyTooLarge { limit });
            }
            return Ok(Cow::Borrowed(body));
        }
        ContentEncoding::Zstd => {
            let dec = zstd::stream::read::Decoder::new(body).map_err(|e| corrupt(encoding, &e))?;
            read_bounded(dec, limit, encoding)?
        }
        other => compressed(body, other, limit)?,
    };
    Ok(Cow::Owned(out))
}

#[cfg(feature = "http")]
fn compressed(
    body: &[u8],
    encoding: ContentEncoding,
    limit: usize,
) -> Result<Vec<u8>, IngestError> {
    match encoding {
        ContentEncoding::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(body), limit, encoding)
        }
        ContentEncoding::Deflate => {
            read_bounded(flate2::read::ZlibDecoder::new(body), limit, encoding)
        }
        _ => snappy(body, limit),
    }
}

#[cfg(not(feature = "http"))]
fn compressed(_: &[u8], encoding: ContentEncoding, _: usize) -> Result<Vec<u8>, IngestError> {
    // `ContentEncoding::parse` returns these codings only with the `http` feature.
    Err(IngestError::UnsupportedEncoding(encoding.name().to_owned()))
}

#[cfg(feature = "http")]
fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let len = snap::raw::decompress_len(body).map_err(|e| corrupt(ContentEncoding::Snappy, &e))?;
    if len > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| corrupt(ContentEncoding::Snappy, &e))
}

fn corrupt(encoding: ContentEncoding, e: &dyn std::fmt::Display) -> IngestError {
    IngestError::malformed(
        encoding.name(),
        format!("the compressed data is corrupt: {e}"),
    )
}

/// Reads `r` to the end into a buffer whose capacity never exceeds `limit + 1` bytes.
fn read_bounded(
    r: impl Read,
    limit: usize,
    encoding: ContentEncoding,
) -> Result<Vec<u8>, IngestError> {
    let cap = limit.saturating_add(1);
    let mut r = r.take(cap as u64);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(encoding, &e)),
        };
        if out.len() + n > out.capacity() {
            // Double, but never past `cap`: `take` already bounds what can arrive.
            let want = (out.capacity() * 2)
                .max(out.len() + n)
                .max(16 << 10)
                .min(cap);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    Ok(out)
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("writes to a Vec");
        enc.finish().expect("writes to a Vec")
    }

    #[test]
    fn identity_is_borrowed_and_bounded() {
        let out = decompress(b"abc", "", 3).expect("fits");
        assert!(matches!(out, Cow::Borrowed(b"abc")));
        assert!(matches!(
            decompress(b"abcd", "identity", 3),
            Err(IngestError::BodyTooLarge { limit: 3 })
        ));
    }

    #[test]
    fn every_supported_coding_round_trips() {
        let data = b"cpu,host=a value=1 1\n".repeat(100);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&data).expect("writes to a Vec");
        let bodies = [
            ("gzip", gzip(&data)),
            ("X-Gzip", gzip(&data)),
            ("deflate", zlib.finish().expect("writes to a Vec")),
            ("zstd", zstd::encode_all(&data[..], 1).expect("compresses")),
            (
                "snappy",
                snap::raw::Encoder::new()
                    .compress_vec(&data)
                    .expect("compresses"),
            ),
            (" gzip , identity", gzip(&data)),
        ];
        for (coding, body) in bodies {
            let out = decompress(&body, coding, data.len()).expect(coding);
            assert_eq!(&*out, &data[..], "{coding}");
        }
    }

    #[test]
    fn a_gzip_bomb_fails_without_being_inflated() {
        // 100 MB of zeros compress to about 100 KB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).expect("writes to a Vec");
        }
        let bomb = enc.finish().expect("writes to a Vec");
        assert!(bomb.len() < 1 << 20);
        let limit = 1 << 20;
        let err = decompress(&bomb, "gzip", limit).expect_err("too large");
        assert!(matches!(err, IngestError::BodyTooLarge { limit: l } if l == limit));
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn read_bounded_never_grows_past_the_limit() {
        let limit = 100_000;
        let data = vec![7u8; 10 * limit];
        let out = read_bounded(&data[..limit], limit, ContentEncoding::Gzip).expect("fits");
        assert!(out.capacity() <= limit + 1, "capacity {}", out.capacity());
        let err = read_bounded(&data[..], limit, ContentEncoding::Gzip);
        assert!(matches!(err, Err(IngestError::BodyTooLarge { .. })));
    }

    #[test]
    fn snappy_checks_the_announced_length_before_allocating() {
        let body = snap::raw::Encoder::new()
            .compress_vec(&[0u8; 1000])
            .expect("compresses");
        assert!(matches!(
            decompress(&body, "snappy", 999),
            Err(IngestError::BodyTooLarge { limit: 999 })
        ));
    }

    #[test]
    fn corrupt_data_and_unknown_codings_are_refused() {
        let err = decompress(b"not gzip", "gzip", 100).expect_err("corrupt");
        assert!(
            matches!(err, IngestError::Malformed { format: "gzip", .. }),
            "{err}"
        );
        assert_eq!(err.status(), 400);
        assert!(decompress(b"\xff\xff\xff\xff\xff", "snappy", 100).is_err());
        assert!(decompress(b"junk", "zstd", 100).is_err());
        for coding in ["br", "gzip, zstd", "compress"] {
            let err = decompress(b"x", coding, 100).expect_err(coding);
            assert!(
                matches!(err, IngestError::UnsupportedEncoding(_)),
                "{coding}"
            );
            assert_eq!(err.status(), 415);
        }
    }
}
