//! The host a request is for, read once and strictly: what routing matches on is exactly what the
//! upstream gets in `X-Forwarded-Host`.
//!
//! `Host: b.corp.test:1@a.corp.test` is one host to a router that splits at the last `:` and
//! another to an upstream that parses it as a URL authority with userinfo; `evil.test/.corp.test`
//! ends with `.corp.test` for a suffix match and starts with `evil.test` for a URL parser. So a
//! host is a reg-name or an IP literal with an optional port, nothing else (RFC 3986 3.2.2), and
//! the reg-name is narrower than RFC 3986 allows: letters, digits, `-`, `.` and `_` only. The
//! sub-delimiters it would also permit (`,` above all) are where frameworks split
//! `X-Forwarded-Host` lists, so `evil.test,api.corp.test` would be a third reading.

use std::fmt;
use std::net::Ipv6Addr;

use bytes::Bytes;
use http::HeaderValue;

/// Why a `Host` (or `:authority`, or absolute-form target) was refused (answered 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadHost {
    Empty,
    /// `user@host`: userinfo has no place in a request's host.
    Userinfo,
    /// A byte outside letters, digits, `-`, `.`, `_` (`/`, `\`, `?`, `#`, `%`, space, `,` ...).
    Character,
    /// An empty label (`a..b`, `.a`), or a name longer than DNS allows.
    Label,
    /// Not 1 to 5 digits up to 65535.
    Port,
    /// `[...]` that is not an IPv6 address.
    IpLiteral,
}

impl BadHost {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BadHost::Empty => "empty",
            BadHost::Userinfo => "userinfo",
            BadHost::Character => "character",
            BadHost::Label => "label",
            BadHost::Port => "port",
            BadHost::IpLiteral => "ip_literal",
        }
    }
}

impl fmt::Display for BadHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's host, lower-cased, without a trailing dot, with the port if one was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHost {
    /// `name` or `name:port`.
    text: String,
    name_len: usize,
}

impl RequestHost {
    /// What routes match on: the name (or `[v6]` literal) without the port.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.text[..self.name_len]
    }

    /// `name[:port]`, as the upstream's `X-Forwarded-Host`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The `X-Forwarded-Host` value; the bytes were checked to be header-safe when parsed.
    #[must_use]
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(Bytes::copy_from_slice(self.text.as_bytes())).ok()
    }
}

/// Reads one host field value.
///
/// # Errors
///
/// [`BadHost`] for anything but `reg-name [":" port]` or `"[" IPv6 "]" [":" port]`.
pub fn parse_host(raw: &[u8]) -> Result<RequestHost, BadHost> {
    if raw.is_empty() {
        return Err(BadHost::Empty);
    }
    if raw.contains(&b'@') {
        return Err(BadHost::Userinfo);
    }
    let (name, port) = if raw[0] == b'[' {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(BadHost::IpLiteral)?;
        let (literal, rest) = raw.split_at(close + 1);
        let inner = std::str::from_utf8(&literal[1..close]).map_err(|_| BadHost::IpLiteral)?;
        // Digits, hex and `:`/`.` only: no zone id (`%25eth0`) and no IPvFuture (`v1.x`).
        if !inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || inner.parse::<Ipv6Addr>().is_err()
        {
            return Err(BadHost::IpLiteral);
        }
        (literal, port_part(rest)?)
    } else {
        let colon = raw.iter().position(|&b| b == b':');
        let (name, rest) = raw.split_at(colon.unwrap_or(raw.len()));
        check_reg_name(name)?;
        (name, port_part(rest)?)
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let mut text = String::with_capacity(name.len() + port.map_or(0, |p| p.len() + 1));
    // Every byte was checked to be ASCII above.
    text.extend(name.iter().map(|&b| char::from(b.to_ascii_lowercase())));
    let name_len = text.len();
    if let Some(port) = port {
        text.push(':');
        text.extend(port.iter().map(|&b| char::from(b)));
    }
    Ok(RequestHost { text, name_len })
}

fn check_reg_name(name: &[u8]) -> Result<(), BadHost> {
    if name.is_empty() {
        return Err(BadHost::Empty);
    }
    if !name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(BadHost::Character);
    }
    // One trailing dot is a fully qualified name; any other empty label is not a name.
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 || name.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return Err(BadHost::Label);
    }
    Ok(())
}

/// The port after the host, without its `:`; `rest` is empty or starts with `:`.
fn port_part(rest: &[u8]) -> Result<Option<&[u8]>, BadHost> {
    let Some(digits) = rest.strip_prefix(b":") else {
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(BadHost::Character)
        };
    };
    let in_range = (1..=5).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .is_some_and(|p| p <= 65_535);
    if in_range {
        Ok(Some(digits))
    } else {
        Err(BadHost::Port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_literals() {
        let cases: &[(&str, &str, &str)] = &[
            ("api.example.com", "api.example.com", "api.example.com"),
            (
                "API.Example.COM:8443",
                "api.example.com",
                "api.example.com:8443",
            ),
            ("api.example.com.", "api.example.com", "api.example.com"),
            (
                "api.example.com.:443",
                "api.example.com",
                "api.example.com:443",
            ),
            ("localhost", "localhost", "localhost"),
            ("127.0.0.1:8080", "127.0.0.1", "127.0.0.1:8080"),
            ("[::1]", "[::1]", "[::1]"),
            ("[2001:DB8::1]:443", "[2001:db8::1]", "[2001:db8::1]:443"),
            (
                "[::ffff:10.0.0.1]",
                "[::ffff:10.0.0.1]",
                "[::ffff:10.0.0.1]",
            ),
            (
                "my_host-1.internal",
                "my_host-1.internal",
                "my_host-1.internal",
            ),
            ("h:65535", "h", "h:65535"),
            ("h:0080", "h", "h:0080"),
        ];
        for (raw, name, text) in cases {
            let host = parse_host(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(host.name(), *name, "{raw}");
            assert_eq!(host.as_str(), *text, "{raw}");
            assert_eq!(host.header_value().unwrap(), *text);
        }
    }

    #[test]
    fn refuses_everything_else() {
        use BadHost::*;
        let cases: &[(&[u8], BadHost)] = &[
            (b"", Empty),
            (b":80", Empty),
            (b"b.corp.test:1@a.corp.test", Userinfo),
            (b"user@api.example.com", Userinfo),
            (b"evil.test/.corp.test", Character),
            (b"evil.test\\.corp.test", Character),
            (b"a b", Character),
            (b" a", Character),
            (b"a?b", Character),
            (b"a#b", Character),
            (b"%61.corp.test", Character),
            (b"evil.test,api.corp.test", Character),
            (b"a;b", Character),
            (b"a\tb", Character),
            (b"\xc3\xa9.test", Character),
            (b"a..b", Label),
            (b".a", Label),
            (b".", Label),
            (b"a..", Label),
            (b"h:", Port),
            (b"h:x", Port),
            (b"h:65536", Port),
            (b"h:123456", Port),
            (b"h:80:80", Port),
            (b"h:+80", Port),
            (b"[::1", IpLiteral),
            (b"[x]", IpLiteral),
            (b"[fe80::1%25eth0]", IpLiteral),
            (b"[v1.abc]", IpLiteral),
            (b"[1.2.3.4]", IpLiteral),
            (b"[::1]x", Character),
            (b"[::1]:", Port),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_host(raw),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = format!("{}.test", "a".repeat(250));
        assert_eq!(parse_host(long.as_bytes()), Err(Label));
    }
}
