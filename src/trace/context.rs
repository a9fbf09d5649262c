//! W3C Trace Context (`traceparent`): the one parser of the header and the one renderer of the
//! gateway's own, and the head-sampling decision. Pure, unit-tested here, fuzzed beside the other
//! parsers.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` bit of `trace-flags`.
const SAMPLED: u8 = 0x01;

/// A parent a client named: its trace, its span and whether it was sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// The client's `traceparent`, if it sent exactly one well-formed header. Anything else (two
/// headers, a bad length, upper-case hex, an all-zero id, version `ff`) is `None`: the gateway
/// then starts a new trace, as the spec tells a receiver that cannot parse the header to do.
pub fn parent_of(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(one), None) => parse_traceparent(one.as_bytes()),
        _ => None,
    }
}

/// `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex (W3C Trace Context 3.2).
/// A version above `00` may append fields after a `-`, which are ignored (3.2.4).
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    match (version, value.len()) {
        (0, 55) => {}
        (0, _) => return None,
        (_, 55) => {}
        (_, _) if value[55] == b'-' => {}
        _ => return None,
    }
    let mut trace_id = [0u8; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, byte) in span_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        flags,
    })
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        // Upper case is invalid in traceparent (3.2.2.2).
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// Lower-case hex of `bytes`, as trace ids appear in logs and in the spec.
#[cfg(test)]
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// The `traceparent` the upstream receives: version 00, the gateway's span as its parent.
pub fn traceparent_value(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let mut text = Vec::with_capacity(55);
    text.extend_from_slice(b"00-");
    push_hex(&mut text, trace_id);
    text.push(b'-');
    push_hex(&mut text, span_id);
    text.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000000-0000000000000000-00",
    ))
}

/// A fresh, non-zero trace id. Ids are correlation handles, not secrets: the per-thread
/// generator the request id uses is enough (W3C asks for randomness, not unpredictability).
pub fn new_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

/// A fresh, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// Parent-based head sampling: a parent's decision stands (sampled or not); a new trace is
/// sampled when its id's low 64 bits fall under `ratio` of the range, as OpenTelemetry's
/// `TraceIdRatioBased` does, so every gateway of a fleet agrees on the same trace.
pub fn sample(parent: Option<&TraceParent>, trace_id: &[u8; 16], ratio: f64) -> bool {
    if let Some(parent) = parent {
        return parent.sampled();
    }
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    // `ratio * 2^64` as an exclusive bound; below 1.0 it always fits a u64.
    let bound = (ratio * 18_446_744_073_709_551_616.0) as u64;
    u64::from_be_bytes(low) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let p = parse_traceparent(GOOD.as_bytes()).expect("valid");
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled());
        assert_eq!(
            traceparent_value(&p.trace_id, &p.span_id, true)
                .to_str()
                .ok(),
            Some(GOOD)
        );
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_may_append_fields() {
        let p = parse_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next",
        )
        .expect("a future version");
        assert!(!p.sampled());
    }

    #[test]
    fn two_headers_are_no_parent() {
        let mut headers = HeaderMap::new();
        headers.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(parent_of(&headers).is_some());
        headers.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(parent_of(&headers).is_none());
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let sampled = parse_traceparent(GOOD.as_bytes()).expect("valid");
        let unsampled = TraceParent {
            flags: 0,
            ..sampled
        };
        let id = new_trace_id();
        assert!(sample(Some(&sampled), &id, 0.0));
        assert!(!sample(Some(&unsampled), &id, 1.0));
        assert!(sample(None, &id, 1.0));
        assert!(!sample(None, &id, 0.0));
        let hits = (0..10_000)
            .filter(|_| sample(None, &new_trace_id(), 0.25))
            .count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }

    #[test]
    fn fresh_ids_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(new_trace_id(), [0; 16]);
            assert_ne!(new_span_id(), [0; 8]);
        }
    }
}
