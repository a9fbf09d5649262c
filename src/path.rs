//! Request-path normalization, so that route matching and the upstream judge the very same path.
//!
//! Proxy bypasses live in the gap between how the gateway and an upstream read a path
//! (`/public/..;/admin`, `%2e%2e`, `%2F`, `\`, `//admin`): the gateway forwards exactly the path it
//! routed on. Anything that cannot be normalized without guessing how some upstream would read it
//! is refused (the caller answers 400) rather than repaired: a silently "fixed" path is exactly the
//! kind of disagreement an attacker looks for.
//!
//! This is vocabulary shared by the config compiler (prefixes are written normalized) and the
//! request path; it imports nothing of the crate.

use std::borrow::Cow;
use std::fmt;

/// How request paths are canonicalized before routing (`server.path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// Runs of `/` collapse to one before routing and forwarding (as nginx's default
    /// `merge_slashes on` does); with `false`, a path holding an empty segment is refused.
    pub merge_slashes: bool,
    /// Prefixes match without regard to ASCII case (for upstreams such as IIS that ignore it).
    pub case_insensitive: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            case_insensitive: false,
        }
    }
}

/// Why a request path was refused (always answered 400 by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafePath {
    NotOriginForm,
    EncodedSlash,
    Backslash,
    ControlByte,
    AboveRoot,
    DotSegmentParams,
    BadPercentEncoding,
    NonAscii,
    /// `//` with `merge_slashes: false`: an upstream that merges slashes would read another path.
    EmptySegment,
    /// A segment that is only `;` parameters (`/;x/admin`), before the last one.
    ParamsOnlySegment,
}

impl UnsafePath {
    /// Short `snake_case` label, stable enough to use in logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UnsafePath::NotOriginForm => "not_origin_form",
            UnsafePath::EncodedSlash => "encoded_slash",
            UnsafePath::Backslash => "backslash",
            UnsafePath::ControlByte => "control_byte",
            UnsafePath::AboveRoot => "above_root",
            UnsafePath::DotSegmentParams => "dot_segment_params",
            UnsafePath::BadPercentEncoding => "bad_percent_encoding",
            UnsafePath::NonAscii => "non_ascii",
            UnsafePath::EmptySegment => "empty_segment",
            UnsafePath::ParamsOnlySegment => "params_only_segment",
        }
    }
}

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the normalized path that both route matching and the upstream will see.
///
/// `raw` is the path of an origin-form request target with the query already split off. Empty
/// segments are merged first (or refused), then dot segments resolved, as nginx does: so
/// `/x/..//admin` is `/admin`, never `//admin` that a route guarding `/admin` would miss.
///
/// # Errors
///
/// [`UnsafePath`] names why the path cannot be forwarded safely; when several problems are
/// present, the first one met reading left to right is reported.
pub fn normalize_path(raw: &str, policy: PathPolicy) -> Result<String, UnsafePath> {
    let Some(mut rest) = raw.strip_prefix('/') else {
        return Err(UnsafePath::NotOriginForm);
    };
    // Decoding and dot removal only ever shrink the path and uppercasing hex keeps its length,
    // so this is the only allocation, and an unchanged path is copied in the same single pass
    // that validates it.
    let mut out = String::with_capacity(raw.len());
    loop {
        // `out` always holds complete "/segment" pieces; this segment starts here.
        let seg_start = out.len();
        out.push('/');
        let last = loop {
            // Runs of ordinary bytes are copied whole: that is most of almost every path.
            let run = rest
                .bytes()
                .position(|b| !is_plain(b))
                .unwrap_or(rest.len());
            // Every byte before `run` is ASCII, so the split is on a char boundary; should that
            // ever break, failing closed beats forwarding a truncated path.
            let (plain, tail) = rest.split_at_checked(run).ok_or(UnsafePath::NonAscii)?;
            out.push_str(plain);
            rest = tail;
            let consumed = match rest.as_bytes() {
                [] => break true,
                [b'/', ..] => {
                    rest = rest.get(1..).ok_or(UnsafePath::NonAscii)?;
                    break false;
                }
                [b'%', hi, lo, ..] => {
                    let (Some(h), Some(l)) = (hex_value(*hi), hex_value(*lo)) else {
                        return Err(UnsafePath::BadPercentEncoding);
                    };
                    push_escape(&mut out, (h << 4) | l, *hi, *lo)?;
                    3
                }
                [b'%', ..] => return Err(UnsafePath::BadPercentEncoding),
                [b, ..] => return Err(refuse_raw(*b)),
            };
            rest = rest.get(consumed..).ok_or(UnsafePath::NonAscii)?;
        };
        let segment = out.get(seg_start..).unwrap_or_default();
        // An empty segment that is not the last one is a `//`; the last one is a trailing slash,
        // which names another resource and stays.
        if segment.len() == 1 && !last {
            if !policy.merge_slashes {
                return Err(UnsafePath::EmptySegment);
            }
            out.truncate(seg_start);
            continue;
        }
        let dot_segment = match classify(segment.strip_prefix('/').unwrap_or(segment)) {
            Segment::Normal => false,
            // Empty once a servlet container drops its parameters, and then merged away:
            // `/;/admin` would be `/admin` upstream while routing saw a first segment `;`. As
            // the last segment it is only a trailing slash, which matches the same prefixes.
            Segment::ParamsOnly if !last => return Err(UnsafePath::ParamsOnlySegment),
            Segment::ParamsOnly => false,
            Segment::Dot => {
                out.truncate(seg_start);
                true
            }
            Segment::DotDot => {
                out.truncate(seg_start);
                // Clamping at the root would hand the upstream a different path than the client
                // asked for; a client that climbs out of the root is broken or probing.
                let parent = out.rfind('/').ok_or(UnsafePath::AboveRoot)?;
                out.truncate(parent);
                true
            }
            Segment::DotWithParams => return Err(UnsafePath::DotSegmentParams),
        };
        if last {
            // RFC 3986 5.2.4: a final "." or ".." still names a directory, so the path keeps its
            // trailing slash (which is also what keeps "/a/.." from collapsing to "").
            if dot_segment {
                out.push('/');
            }
            return Ok(out);
        }
    }
}

/// Segment-aware prefix test used by routing, so that `/orders` never matches `/ordersX`.
///
/// `prefix` is already normalized, begins with `/` and ends with `/` only if it is `/` (the
/// config compiler trims the rest); `;` ends a segment just as `/` does, because upstreams
/// commonly strip `;` parameters before resolving the resource.
#[must_use]
pub fn prefix_matches(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        // `%3B` ends a segment too (escapes are uppercased by `normalize_path`): an upstream that
        // decodes before splitting off parameters reads `/admin%3Bx` as `/admin`, so the route
        // guarding `/admin` must catch it.
        Some(rest) => {
            rest.is_empty()
                || prefix == "/"
                || rest.starts_with(['/', ';'])
                || rest.starts_with("%3B")
        }
    }
}

/// A normalized path without its `;` parameters (`/a;x/b` is `/a/b`), as servlet containers and
/// others read it before mapping; `%3B` counts as `;` for upstreams that decode first. Borrows
/// when there are none.
#[must_use]
pub fn strip_params(path: &str) -> Cow<'_, str> {
    if !path.contains(';') && !path.contains("%3B") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        let end = segment
            .find(';')
            .into_iter()
            .chain(segment.find("%3B"))
            .min()
            .unwrap_or(segment.len());
        out.push('/');
        out.push_str(&segment[..end]);
    }
    Cow::Owned(out)
}

/// A normalized path with its ASCII letters lower-cased, escapes kept in their canonical
/// upper-case form (`%3B` must still end a segment), as a case-insensitive upstream reads it.
/// Borrows when there is nothing to fold, which is most paths.
#[must_use]
pub fn fold_case(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let needs_folding = bytes.iter().enumerate().any(|(i, b)| {
        b.is_ascii_uppercase()
            && !(i >= 1 && bytes[i - 1] == b'%')
            && !(i >= 2 && bytes[i - 2] == b'%')
    });
    if !needs_folding {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut escape_digits = 0;
    for c in path.chars() {
        if escape_digits > 0 {
            escape_digits -= 1;
            out.push(c);
        } else {
            if c == '%' {
                escape_digits = 2;
            }
            out.push(c.to_ascii_lowercase());
        }
    }
    Cow::Owned(out)
}

enum Segment {
    Normal,
    /// `;x` with no name before the parameters: empty to an upstream that drops them.
    ParamsOnly,
    Dot,
    DotDot,
    DotWithParams,
}

/// Looks only at the first few bytes, so ordinary segments cost no second scan.
fn classify(seg: &str) -> Segment {
    match seg.as_bytes() {
        b"." => Segment::Dot,
        b".." => Segment::DotDot,
        // Servlet containers and others drop `;` parameters after resolving dot segments, so
        // `/..;/` slips past a proxy's traversal check yet climbs at the upstream. An upstream
        // that decodes before splitting off parameters reads `%3B` as `;` too; escapes are
        // already uppercased here, so one spelling covers both cases.
        [b'.', b';', ..]
        | [b'.', b'.', b';', ..]
        | [b'.', b'%', b'3', b'B', ..]
        | [b'.', b'.', b'%', b'3', b'B', ..] => Segment::DotWithParams,
        [b';', ..] | [b'%', b'3', b'B', ..] => Segment::ParamsOnly,
        _ => Segment::Normal,
    }
}

/// Bytes that are copied as they are; everything else needs a closer look.
fn is_plain(b: u8) -> bool {
    matches!(b, 0x20..=0x7E) && !matches!(b, b'/' | b'%' | b'\\')
}

/// Why a raw byte that is neither plain, `/` nor `%` cannot be forwarded.
fn refuse_raw(b: u8) -> UnsafePath {
    match b {
        // Windows-based upstreams and some frameworks treat `\` as a separator.
        b'\\' => UnsafePath::Backslash,
        // NUL truncates in C-based upstreams; other controls confuse logs and parsers.
        0x00..=0x1F | 0x7F => UnsafePath::ControlByte,
        _ => UnsafePath::NonAscii,
    }
}

/// Emits one valid `%XX` escape in canonical form.
fn push_escape(out: &mut String, byte: u8, hi: u8, lo: u8) -> Result<(), UnsafePath> {
    match byte {
        // A decoded separator would move segment boundaries between the gateway's view and the
        // upstream's, so there is no safe way to forward it.
        b'/' | b'\\' => Err(UnsafePath::EncodedSlash),
        0x00..=0x1F | 0x7F => Err(UnsafePath::ControlByte),
        // RFC 3986 6.2.2.2: unreserved characters mean the same encoded or not, so decoding them
        // gives one spelling per resource (and exposes `%2e%2e` as the `..` it is).
        b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
            out.push(char::from(b));
            Ok(())
        }
        // Decoding anything else could change meaning (`%3F`, `%25`...); only the case of the
        // hex digits is canonicalized (RFC 3986 6.2.2.1).
        _ => {
            out.push('%');
            out.push(char::from(hi.to_ascii_uppercase()));
            out.push(char::from(lo.to_ascii_uppercase()));
            Ok(())
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MERGE: PathPolicy = PathPolicy {
        merge_slashes: true,
        case_insensitive: false,
    };
    const REFUSE_EMPTY: PathPolicy = PathPolicy {
        merge_slashes: false,
        case_insensitive: false,
    };

    fn normalize(raw: &str) -> Result<String, UnsafePath> {
        normalize_path(raw, MERGE)
    }

    #[test]
    fn normalizes_table() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("/a/b/c", "/a/b/c"),
            // runs of slashes merge, a trailing slash stays
            ("//", "/"),
            ("///", "/"),
            ("//a//b", "/a/b"),
            ("/a//b/", "/a/b/"),
            ("/a///", "/a/"),
            ("//admin", "/admin"),
            ("/x/..//admin", "/admin"),
            ("/x//..//admin", "/admin"),
            // single dots
            ("/.", "/"),
            ("/./", "/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("/a/./", "/a/"),
            ("/./a", "/a"),
            ("/././.", "/"),
            // double dots
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/../b", "/b"),
            ("/a/b/../../c", "/c"),
            ("/a/b/../c/./d", "/a/c/d"),
            ("/a/./../b", "/b"),
            ("/a//..", "/"),
            ("/a//../b", "/b"),
            ("/a/b//../..", "/"),
            // dots that are not dot segments
            ("/...", "/..."),
            ("/.a", "/.a"),
            ("/..a", "/..a"),
            ("/a.", "/a."),
            ("/a..", "/a.."),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.../b", "/a/.../b"),
            // encoded dots are dots
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2E/b", "/b"),
            ("/a/.%2E/b", "/b"),
            ("/a/%2e./b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/%2e", "/a/"),
            ("/%2e%2e%2e", "/..."),
            // unreserved characters are decoded, case-insensitively
            ("/%7Euser", "/~user"),
            ("/%7euser", "/~user"),
            ("/%41%5a%61%7A%30%39", "/AZaz09"),
            ("/%2D%2d%5F%5f%7E%7e", "/--__~~"),
            // everything else is kept, with uppercase hex
            ("/%3b", "/%3B"),
            ("/a%3bb", "/a%3Bb"),
            ("/%20", "/%20"),
            ("/a%20b", "/a%20b"),
            ("/%25", "/%25"),
            ("/%252e%252e", "/%252e%252e"),
            ("/%3f%23", "/%3F%23"),
            ("/%c3%a9", "/%C3%A9"),
            ("/%C3%A9", "/%C3%A9"),
            ("/%80%fF", "/%80%FF"),
            ("/%3A%40", "/%3A%40"),
            // parameters on ordinary segments are kept
            ("/a;b/c", "/a;b/c"),
            ("/a;b", "/a;b"),
            ("/;", "/;"),
            ("/a/;x", "/a/;x"),
            ("/a/%3Bx", "/a/%3Bx"),
            ("/...;x", "/...;x"),
            ("/.a;x", "/.a;x"),
            // other visible ASCII passes untouched
            ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
            ("/a b", "/a b"),
            ("/a?b#c", "/a?b#c"),
            ("/{}|^`\"<>[]", "/{}|^`\"<>[]"),
            ("/~", "/~"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(*want), "raw = {raw:?}");
        }
    }

    #[test]
    fn refuses_table() {
        use UnsafePath::*;
        let cases: &[(&str, UnsafePath)] = &[
            ("", NotOriginForm),
            ("a", NotOriginForm),
            ("a/b", NotOriginForm),
            ("*", NotOriginForm),
            ("http://h/a", NotOriginForm),
            (" /a", NotOriginForm),
            ("%2Fa", NotOriginForm),
            ("\\a", NotOriginForm),
            // encoded separators
            ("/a%2Fb", EncodedSlash),
            ("/a%2fb", EncodedSlash),
            ("/%2F", EncodedSlash),
            ("/a%5Cb", EncodedSlash),
            ("/a%5cb", EncodedSlash),
            ("/..%2F..%2Fetc", EncodedSlash),
            ("/%2e%2e%2f", EncodedSlash),
            // raw backslash
            ("/a\\b", Backslash),
            ("/\\", Backslash),
            ("/..\\", Backslash),
            // control bytes, raw and encoded
            ("/a\0b", ControlByte),
            ("/\t", ControlByte),
            ("/a\r\nb", ControlByte),
            ("/\x1f", ControlByte),
            ("/\x7f", ControlByte),
            ("/%00", ControlByte),
            ("/a%0d%0ab", ControlByte),
            ("/%0A", ControlByte),
            ("/%1f", ControlByte),
            ("/%1F", ControlByte),
            ("/%7f", ControlByte),
            ("/%7F", ControlByte),
            ("/%09", ControlByte),
            ("/a.php%00.jpg", ControlByte),
            // climbing above the root
            ("/..", AboveRoot),
            ("/../", AboveRoot),
            ("/../a", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("/./..", AboveRoot),
            ("/%2e%2e", AboveRoot),
            ("/%2E%2E/etc/passwd", AboveRoot),
            ("/.%2e/", AboveRoot),
            ("//../..", AboveRoot),
            ("//..", AboveRoot),
            ("/a/b/../../..", AboveRoot),
            // dot segments with parameters
            ("/..;/", DotSegmentParams),
            ("/..;", DotSegmentParams),
            ("/a/..;/b", DotSegmentParams),
            ("/.;x/", DotSegmentParams),
            ("/.;", DotSegmentParams),
            ("/..;jsessionid=1", DotSegmentParams),
            ("/a/..;jsessionid=1/b", DotSegmentParams),
            ("/%2e%2e;/", DotSegmentParams),
            ("/.%2e;x", DotSegmentParams),
            ("/%2e;", DotSegmentParams),
            ("/..%3b/", DotSegmentParams),
            ("/..%3B/", DotSegmentParams),
            ("/.%3Bx", DotSegmentParams),
            ("/%2e%2e%3b/a", DotSegmentParams),
            // segments that are only parameters, before the last
            ("/;/a", ParamsOnlySegment),
            ("/;x/admin", ParamsOnlySegment),
            ("/a/;/b", ParamsOnlySegment),
            ("/a/%3bx/b", ParamsOnlySegment),
            ("/;x/../admin", ParamsOnlySegment),
            // broken escapes
            ("/%", BadPercentEncoding),
            ("/%a", BadPercentEncoding),
            ("/%A", BadPercentEncoding),
            ("/a%", BadPercentEncoding),
            ("/%zz", BadPercentEncoding),
            ("/%g0", BadPercentEncoding),
            ("/%0g", BadPercentEncoding),
            ("/%%41", BadPercentEncoding),
            ("/%-1", BadPercentEncoding),
            ("/%+1", BadPercentEncoding),
            ("/% 1", BadPercentEncoding),
            ("/%1/", BadPercentEncoding),
            ("/%/", BadPercentEncoding),
            ("/%é", BadPercentEncoding),
            // non-ASCII
            ("/é", NonAscii),
            ("/a/日本", NonAscii),
            ("/\u{a0}", NonAscii),
            ("/\u{200b}", NonAscii),
            ("/\u{ff0f}", NonAscii),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), Err(*want), "raw = {raw:?}");
        }
    }

    #[test]
    fn first_problem_from_the_left_wins() {
        assert_eq!(normalize("/../%00"), Err(UnsafePath::AboveRoot));
        assert_eq!(normalize("/%00/.."), Err(UnsafePath::ControlByte));
        assert_eq!(normalize("/..;\\"), Err(UnsafePath::Backslash));
        assert_eq!(normalize("/%2F\\"), Err(UnsafePath::EncodedSlash));
        assert_eq!(normalize("/\\%2F"), Err(UnsafePath::Backslash));
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        use UnsafePath::*;
        let all = [
            NotOriginForm,
            EncodedSlash,
            Backslash,
            ControlByte,
            AboveRoot,
            DotSegmentParams,
            BadPercentEncoding,
            NonAscii,
            EmptySegment,
            ParamsOnlySegment,
        ];
        let mut labels: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
        for l in &labels {
            assert!(!l.is_empty());
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
        assert_eq!(AboveRoot.to_string(), "above_root");
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn unchanged_path_needs_no_reallocation() {
        let raw = "/api/v1/orders;x/%C3%A9/~a-b_c.d";
        let out = normalize(raw).unwrap();
        assert_eq!(out, raw);
        // Growing would at least double the buffer.
        assert!(out.capacity() < 2 * raw.len());
    }

    #[test]
    fn every_single_byte_after_the_root() {
        for b in 0u8..=0x7F {
            let raw = format!("/{}", char::from(b));
            let got = normalize(&raw);
            match b {
                b'\\' => assert_eq!(got, Err(UnsafePath::Backslash)),
                b'%' => assert_eq!(got, Err(UnsafePath::BadPercentEncoding)),
                0..=0x1F | 0x7F => assert_eq!(got, Err(UnsafePath::ControlByte)),
                b'.' | b'/' => assert_eq!(got.as_deref(), Ok("/")),
                _ => assert_eq!(got.as_deref(), Ok(raw.as_str())),
            }
        }
    }

    #[test]
    fn every_escape() {
        for b in 0u8..=0xFF {
            for raw in [format!("/x%{b:02x}y"), format!("/x%{b:02X}y")] {
                let got = normalize(&raw);
                match b {
                    b'/' | b'\\' => assert_eq!(got, Err(UnsafePath::EncodedSlash)),
                    0..=0x1F | 0x7F => assert_eq!(got, Err(UnsafePath::ControlByte)),
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        assert_eq!(got, Ok(format!("/x{}y", char::from(b))))
                    }
                    _ => assert_eq!(got, Ok(format!("/x%{b:02X}y"))),
                }
            }
        }
    }

    #[test]
    fn prefix_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/orders", "/orders", true),
            ("/orders/", "/orders", true),
            ("/orders/1", "/orders", true),
            ("/orders;x", "/orders", true),
            ("/orders;x/1", "/orders", true),
            ("/orders/;x", "/orders", true),
            ("/orders%3Bx/1", "/orders", true),
            ("/ordersX", "/orders", false),
            ("/orders.json", "/orders", false),
            ("/orders%2F1", "/orders", false),
            ("/order", "/orders", false),
            ("/Orders", "/orders", false),
            ("/ORDERS/1", "/orders", false),
            ("/", "/orders", false),
            ("/x/orders", "/orders", false),
            // `/` is the catch-all
            ("/", "/", true),
            ("/anything", "/", true),
            ("/;x", "/", true),
            // multi-segment prefixes
            ("/api/v1", "/api/v1", true),
            ("/api/v1/x", "/api/v1", true),
            ("/api/v10", "/api/v1", false),
            ("/api/v1;a=b", "/api/v1", true),
            ("/api", "/api/v1", false),
        ];
        for (path, prefix, want) in cases {
            assert_eq!(
                prefix_matches(path, prefix),
                *want,
                "path = {path:?}, prefix = {prefix:?}"
            );
        }
    }

    #[test]
    fn empty_segments_are_refused_when_slashes_are_not_merged() {
        for raw in ["//", "//admin", "/a//b", "/a///", "/x/..//admin", "/a//.."] {
            assert_eq!(
                normalize_path(raw, REFUSE_EMPTY),
                Err(UnsafePath::EmptySegment),
                "{raw:?}"
            );
        }
        for (raw, want) in [
            ("/", "/"),
            ("/a/", "/a/"),
            ("/a/b", "/a/b"),
            ("/a/./", "/a/"),
        ] {
            assert_eq!(
                normalize_path(raw, REFUSE_EMPTY).as_deref(),
                Ok(want),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn stripping_drops_parameters_of_every_segment() {
        for (path, want) in [
            ("/a/b", "/a/b"),
            ("/a;x/b", "/a/b"),
            ("/a%3Bx/b;y=1", "/a/b"),
            ("/a;x%3By/b", "/a/b"),
            ("/a/;x", "/a/"),
            ("/", "/"),
        ] {
            assert_eq!(strip_params(path), want, "{path:?}");
        }
        assert!(matches!(strip_params("/plain/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn folding_lowers_letters_but_not_escapes() {
        let cases = [
            ("/admin", "/admin"),
            ("/ADMIN/X", "/admin/x"),
            ("/Admin%3Bx", "/admin%3Bx"),
            ("/%C3%A9T%2A", "/%C3%A9t%2A"),
            ("/a%20B", "/a%20b"),
        ];
        for (path, want) in cases {
            assert_eq!(fold_case(path), want, "{path:?}");
        }
        assert!(matches!(fold_case("/already/lower%3B"), Cow::Borrowed(_)));
    }

    /// A deliberately naive second implementation (split, decode, resolve with a stack) that the
    /// single-pass one must agree with.
    fn reference(raw: &str, policy: PathPolicy) -> Result<String, UnsafePath> {
        let Some(body) = raw.strip_prefix('/') else {
            return Err(UnsafePath::NotOriginForm);
        };
        let pieces: Vec<&str> = body.split('/').collect();
        let mut stack: Vec<String> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            if piece.is_empty() && !last {
                if policy.merge_slashes {
                    continue;
                }
                return Err(UnsafePath::EmptySegment);
            }
            let bytes = piece.as_bytes();
            let mut seg = String::new();
            let mut j = 0;
            while j < bytes.len() {
                let b = bytes[j];
                if b == b'%' {
                    let hex = bytes
                        .get(j + 1..j + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .ok_or(UnsafePath::BadPercentEncoding)?;
                    let v = u8::from_str_radix(hex, 16).unwrap();
                    if v == b'/' || v == b'\\' {
                        return Err(UnsafePath::EncodedSlash);
                    }
                    if v < 0x20 || v == 0x7F {
                        return Err(UnsafePath::ControlByte);
                    }
                    if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                        seg.push(char::from(v));
                    } else {
                        seg.push('%');
                        seg.push_str(&hex.to_ascii_uppercase());
                    }
                    j += 3;
                } else {
                    if b == b'\\' {
                        return Err(UnsafePath::Backslash);
                    }
                    if b < 0x20 || b == 0x7F {
                        return Err(UnsafePath::ControlByte);
                    }
                    if b >= 0x80 {
                        return Err(UnsafePath::NonAscii);
                    }
                    seg.push(char::from(b));
                    j += 1;
                }
            }
            let name = seg.replace("%3B", ";");
            let name = name.split(';').next().unwrap();
            let has_params = seg.len() != name.len();
            if (name == "." || name == "..") && has_params {
                return Err(UnsafePath::DotSegmentParams);
            }
            if name.is_empty() && has_params && !last {
                return Err(UnsafePath::ParamsOnlySegment);
            }
            if seg == ".." {
                stack.pop().ok_or(UnsafePath::AboveRoot)?;
            }
            if seg == "." || seg == ".." {
                if last {
                    stack.push(String::new());
                }
            } else {
                stack.push(seg);
            }
        }
        Ok(format!("/{}", stack.join("/")))
    }

    #[test]
    fn reference_agrees_on_tables() {
        for raw in [
            "/",
            "//..",
            "/a//..",
            "/a/b/../..",
            "/..;x",
            "/.%3b",
            "/a%3B/..",
        ] {
            assert_eq!(normalize(raw), reference(raw, MERGE), "raw = {raw:?}");
        }
    }

    /// Paths built from the pieces that matter, so that dot segments, escapes and separators
    /// actually meet each other instead of drowning in random noise.
    fn path_like() -> impl Strategy<Value = String> {
        // Plain strategies rather than regexes: these run thousands of times per test.
        const GOOD: &[&str] = &[
            "/", "/", "/", "/", ".", ".", "..", "..", ";", "a", "Z~", "%2e", "%2E", "%3b", "%3B",
            "%7E", "%41", "%25", "%c3", "%20",
        ];
        const BAD: &[&str] = &["%", "%2", "%2f", "%5C", "%00", "%7f", "%g1", "\\", "\u{e9}"];
        let piece = prop_oneof![
            40 => prop::sample::select(GOOD).prop_map(str::to_owned),
            1 => prop::sample::select(BAD).prop_map(str::to_owned),
            1 => (0u8..0x80).prop_map(|b| char::from(b).to_string()),
        ];
        (
            prop::bool::weighted(0.95),
            prop::collection::vec(piece, 0..24),
        )
            .prop_map(|(rooted, pieces)| {
                let body = pieces.concat();
                if rooted {
                    format!("/{body}")
                } else {
                    body
                }
            })
    }

    fn is_canonical(out: &str) {
        assert!(out.starts_with('/'), "{out:?}");
        for seg in out.split('/').skip(1) {
            assert!(seg != "." && seg != "..", "dot segment left in {out:?}");
            assert!(!seg.starts_with(".;") && !seg.starts_with("..;"), "{out:?}");
        }
        let bytes = out.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            assert!(
                b.is_ascii() && !b.is_ascii_control() && *b != b'\\',
                "{out:?}"
            );
            if *b == b'%' {
                let hex = &bytes[i + 1..i + 3];
                assert!(hex
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
                let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
                assert!(
                    !(v.is_ascii_alphanumeric() || b"-._~/\\".contains(&v)),
                    "{out:?}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn never_panics_on_any_string(raw in any::<String>()) {
            let _ = normalize_path(&raw, MERGE);
            let _ = normalize_path(&raw, REFUSE_EMPTY);
        }

        #[test]
        fn idempotent_and_canonical(raw in path_like()) {
            if let Ok(once) = normalize(&raw) {
                is_canonical(&once);
                prop_assert!(once.len() <= raw.len().max(1));
                prop_assert_eq!(normalize(&once), Ok(once.clone()));
                prop_assert_eq!(normalize_path(&once, REFUSE_EMPTY), Ok(once.clone()));
                prop_assert!(!once.contains("//"), "{once:?}");
            }
        }

        #[test]
        fn agrees_with_reference(raw in path_like()) {
            prop_assert_eq!(normalize(&raw), reference(&raw, MERGE));
            prop_assert_eq!(normalize_path(&raw, REFUSE_EMPTY), reference(&raw, REFUSE_EMPTY));
        }

        #[test]
        fn agrees_with_reference_on_any_string(raw in any::<String>()) {
            prop_assert_eq!(normalize(&raw), reference(&raw, MERGE));
            prop_assert_eq!(normalize_path(&raw, REFUSE_EMPTY), reference(&raw, REFUSE_EMPTY));
        }

        #[test]
        fn normalized_paths_fall_under_their_own_prefixes(raw in path_like()) {
            if let Ok(path) = normalize(&raw) {
                prop_assert!(prefix_matches(&path, "/"));
                prop_assert!(prefix_matches(&path, &path));
                for (i, _) in path.match_indices(['/', ';']).filter(|(i, _)| *i > 0) {
                    prop_assert!(prefix_matches(&path, &path[..i]));
                }
            }
        }

        #[test]
        fn prefix_never_splits_a_segment(path in "/[a-c/;]{0,12}", prefix in "/[a-c;]{0,6}") {
            if prefix_matches(&path, &prefix) {
                prop_assert!(path.starts_with(&prefix));
                let next = path[prefix.len()..].chars().next();
                prop_assert!(
                    next.is_none() || prefix == "/" || matches!(next, Some('/' | ';'))
                );
            }
        }
    }
}
