//! gRPC vocabulary the gateway needs to pass calls through and to refuse them in gRPC's own terms
//! (a trailers-only response whose `grpc-status` a client reports, where an HTTP 401 would come out
//! as `UNKNOWN`): the status codes, how a request says it is gRPC, and `grpc-timeout`.

use std::time::Duration;

use http::header::{HeaderMap, CONTENT_TYPE};

pub static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The gRPC status codes (grpc/doc/statuscodes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrpcStatus {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcStatus {
    pub const ALL: [GrpcStatus; 17] = [
        GrpcStatus::Ok,
        GrpcStatus::Cancelled,
        GrpcStatus::Unknown,
        GrpcStatus::InvalidArgument,
        GrpcStatus::DeadlineExceeded,
        GrpcStatus::NotFound,
        GrpcStatus::AlreadyExists,
        GrpcStatus::PermissionDenied,
        GrpcStatus::ResourceExhausted,
        GrpcStatus::FailedPrecondition,
        GrpcStatus::Aborted,
        GrpcStatus::OutOfRange,
        GrpcStatus::Unimplemented,
        GrpcStatus::Internal,
        GrpcStatus::Unavailable,
        GrpcStatus::DataLoss,
        GrpcStatus::Unauthenticated,
    ];

    /// The code as it travels in `grpc-status` and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcStatus::Ok => "0",
            GrpcStatus::Cancelled => "1",
            GrpcStatus::Unknown => "2",
            GrpcStatus::InvalidArgument => "3",
            GrpcStatus::DeadlineExceeded => "4",
            GrpcStatus::NotFound => "5",
            GrpcStatus::AlreadyExists => "6",
            GrpcStatus::PermissionDenied => "7",
            GrpcStatus::ResourceExhausted => "8",
            GrpcStatus::FailedPrecondition => "9",
            GrpcStatus::Aborted => "10",
            GrpcStatus::OutOfRange => "11",
            GrpcStatus::Unimplemented => "12",
            GrpcStatus::Internal => "13",
            GrpcStatus::Unavailable => "14",
            GrpcStatus::DataLoss => "15",
            GrpcStatus::Unauthenticated => "16",
        }
    }

    /// The numeric code, as protobuf messages (`google.rpc.Status`) carry it.
    pub fn as_code(self) -> i32 {
        GrpcStatus::ALL
            .iter()
            .position(|&s| s == self)
            .map_or(2, |i| i as i32)
    }

    /// A `grpc-status` value as sent; anything but 0-16 is `Unknown`, as clients read it.
    pub fn from_header(value: &[u8]) -> GrpcStatus {
        GrpcStatus::ALL
            .iter()
            .copied()
            .find(|s| s.as_str().as_bytes() == value)
            .unwrap_or(GrpcStatus::Unknown)
    }
}

/// `content-type: application/grpc` or `application/grpc+<codec>` (gRPC over HTTP/2, "Requests").
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+') | Some(b';'))
    })
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`); `None` if absent or
/// malformed (a malformed one is ignored, as gRPC servers do, and forwarded as sent).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value in milliseconds (rounded up, so a deadline is never
/// extended), or microseconds under a millisecond. Eight digits of milliseconds cover 27 hours.
pub fn timeout_value(left: Duration) -> http::HeaderValue {
    let text = if left < Duration::from_millis(1) {
        format!("{}u", left.as_micros().max(1))
    } else {
        let millis = left.as_nanos().div_ceil(1_000_000).min(99_999_999);
        format!("{millis}m")
    };
    http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn recognises_grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/json",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn parses_grpc_timeout() {
        let cases: &[(&'static str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("100u", Some(Duration::from_micros(100))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None),
            ("m", None),
            ("10", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                timeout(&headers(&[("grpc-timeout", value)])),
                *want,
                "{value}"
            );
        }
        assert_eq!(timeout_value(Duration::from_millis(250)), "250m");
        assert_eq!(timeout_value(Duration::from_micros(1500)), "2m");
        assert_eq!(timeout_value(Duration::from_micros(40)), "40u");
        assert_eq!(timeout_value(Duration::from_secs(86400 * 365)), "99999999m");
    }

    #[test]
    fn status_codes_round_trip() {
        for (i, s) in GrpcStatus::ALL.iter().enumerate() {
            assert_eq!(s.as_str(), i.to_string());
            assert_eq!(GrpcStatus::from_header(s.as_str().as_bytes()), *s);
        }
        assert_eq!(GrpcStatus::from_header(b"17"), GrpcStatus::Unknown);
        assert_eq!(GrpcStatus::from_header(b" 0"), GrpcStatus::Unknown);
    }
}
