//! The headers an upstream receives: nothing a client could use to impersonate the gateway's
//! verdict (identity headers, `Forwarded`, URL-override headers, hop-by-hop fields) and exactly the
//! `X-Forwarded-*`, `X-Request-Id` and claim headers the gateway vouches for.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

/// RFC 9110 7.6.1 hop-by-hop fields, plus the de-facto `Proxy-Connection` and `Keep-Alive`.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers some frameworks trust to override the URL or the method, removed from every request:
/// no client, trusted proxy or not, gets to restate what the gateway judged. `HTTP2-Settings`
/// belongs to the `h2c` upgrade, which is never passed on.
static SPOOFABLE_ALWAYS: [HeaderName; 7] = [
    header::FORWARDED,
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("http2-settings"),
];

/// Headers naming the client, its scheme or the path prefix it used, which upstreams and their
/// frameworks believe: kept only when a `trusted_proxies` peer set them.
static SPOOFABLE_UNLESS_TRUSTED: [HeaderName; 11] = [
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-original-host"),
];

/// The DPoP proof (RFC 9449): addressed to the gateway, which checks it and uses up its `jti`.
/// No upstream gets it, so none can present it anywhere else within its window.
pub static DPOP: HeaderName = HeaderName::from_static("dpop");

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop fields, including every field the `Connection` header names. When
/// `keep_upgrade` is set (a WebSocket handshake being passed through) `Connection: upgrade` and
/// `Upgrade` survive, since the upstream needs them to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none of these (and `Connection` is one of them): a look at the few
    // names present is cheaper than a hashed removal per listed field.
    if !keep_upgrade && !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // `Connection: keep-alive` or `close`, what nearly every response says, names no field to
    // remove beyond the listed ones: only other tokens are read as names.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    // One pass over the names present; each is removed once, whatever named it.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || named.contains(name))
        .filter(|name| !(keep_upgrade && (*name == header::CONNECTION || *name == header::UPGRADE)))
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether this is a WebSocket handshake (RFC 6455 4.1), the one upgrade passed through: any
/// other protocol (`h2c` above all, after which nothing on the connection would be judged) is
/// dropped with the other hop-by-hop fields and the request proceeds without it.
pub fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    let mut upgrade = headers.get_all(header::UPGRADE).iter();
    let only_websocket = match (upgrade.next(), upgrade.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    only_websocket
        && version == Version::HTTP_11
        && method == Method::GET
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes every header any route could inject (`injected`), the URL and method overrides, and,
/// unless the peer is a trusted proxy, the client-identity headers: on every route, anonymous
/// ones included.
pub fn strip_spoofable(headers: &mut HeaderMap, injected: &[HeaderName], from_trusted: bool) {
    // Walks the names present rather than removing every listed one: requests have a handful of
    // fields, configs may inject dozens.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            injected.contains(name)
                || *name == DPOP
                || SPOOFABLE_ALWAYS.contains(name)
                || (!from_trusted && SPOOFABLE_UNLESS_TRUSTED.contains(name))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Whether any header name holds `_`: CGI-style upstreams (WSGI, Rack, PHP) read `X_Auth_Subject`
/// as the `HTTP_X_AUTH_SUBJECT` that `X-Auth-Subject` also becomes.
pub fn has_underscore_names(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name.as_str().contains('_'))
}

/// Removes header names with `_`: all of them (`drop_all`), or those that read as a name the
/// gateway removes or sets once `_` is `-` ([`owned_names`] and the `injected` claim headers), so
/// that `allow` still never lets a client speak for the gateway.
pub fn strip_underscore_names(headers: &mut HeaderMap, drop_all: bool, injected: &[HeaderName]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| {
            drop_all || {
                let dashed = name.as_str().replace('_', "-");
                owned_names().any(|o| o.as_str() == dashed)
                    || injected.iter().any(|o| o.as_str() == dashed)
            }
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Every header name the gateway removes or sets on its own account, claim headers aside: what
/// `_`-spellings must never stand for.
pub fn owned_names() -> impl Iterator<Item = &'static HeaderName> {
    HOP_BY_HOP
        .iter()
        .chain(SPOOFABLE_ALWAYS.iter())
        .chain(SPOOFABLE_UNLESS_TRUSTED.iter())
        .chain([
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REQUEST_ID,
            &crate::trace::TRACEPARENT,
            &crate::trace::TRACESTATE,
            &DPOP,
        ])
}

/// A client's `X-Request-Id` is kept when it is 1 to 128 characters of `A-Z a-z 0-9 - _ . :`,
/// so tracing ids survive the hop while log-injection payloads do not.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request id a client sent if well-formed (exactly one header), else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(one), None) = (sent.next(), sent.next()) {
        if is_valid_request_id(one.as_bytes()) {
            return one.clone();
        }
    }
    new_request_id()
}

fn new_request_id() -> HeaderValue {
    // A correlation handle, not a secret: a per-thread generator seeded from the OS is enough,
    // and costs a few nanoseconds where the system CSPRNG cost most of a microsecond per request.
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut text = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        text[2 * i] = HEX[(b >> 4) as usize];
        text[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// Sets `X-Forwarded-For/-Proto/-Host`. A trusted proxy's `X-Forwarded-For` is appended to (and
/// its `-Proto`/`-Host` kept); anyone else's is replaced, so a client cannot forge its address.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    from_trusted: bool,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let mut xff = String::with_capacity(64);
    if let Some(prior) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        if from_trusted && headers.get_all(&X_FORWARDED_FOR).iter().count() == 1 {
            xff.push_str(prior);
            xff.push_str(", ");
        }
    }
    push_ip(&mut xff, peer);
    // The String's buffer becomes the value: no second copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    if !(from_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(from_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(v) => {
                headers.insert(&X_FORWARDED_HOST, v);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Appends `ip` as text. IPv4, nearly every peer, is written digit by digit: the formatting
/// machinery cost more than the rest of the `X-Forwarded-*` rewrite (callgrind, per request).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + (octet / 10) % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Bytes of all header names and values, as the `max_header_bytes` limit counts them.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrade_survives_when_passed_through() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("keep-alive").is_none());
    }

    #[test]
    fn forged_identity_and_url_overrides_are_removed() {
        let mut h = map(&[
            ("x-auth-subject", "admin"),
            ("forwarded", "for=1.2.3.4"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-other", "1"),
        ]);
        strip_spoofable(&mut h, &[HeaderName::from_static("x-auth-subject")], false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn client_identity_headers_survive_only_from_trusted_proxies() {
        let pairs = [
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("cf-connecting-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
            ("x-cluster-client-ip", "1.2.3.4"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-server", "a"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("x-original-host", "a"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("x-other", "1"),
        ];
        let mut untrusted = map(&pairs);
        strip_spoofable(&mut untrusted, &[], false);
        assert_eq!(
            untrusted.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-other"]
        );
        let mut trusted = map(&pairs);
        strip_spoofable(&mut trusted, &[], true);
        assert_eq!(trusted.len(), 12, "{trusted:?}");
        for gone in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "http2-settings",
        ] {
            assert!(!trusted.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn underscore_names_are_dropped_or_kept_unless_they_spell_an_owned_name() {
        let pairs = [
            ("x_auth_subject", "admin"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x_request_id", "x"),
            ("x_custom_thing", "1"),
            ("x-kept", "1"),
        ];
        let owned = [HeaderName::from_static("x-auth-subject")];
        let mut all = map(&pairs);
        assert!(has_underscore_names(&all));
        strip_underscore_names(&mut all, true, &owned);
        assert_eq!(
            all.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
        assert!(!has_underscore_names(&all));
        let mut allowed = map(&pairs);
        strip_underscore_names(&mut allowed, false, &owned);
        let mut left: Vec<&str> = allowed.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-kept", "x_custom_thing"]);
    }

    #[test]
    fn only_a_websocket_handshake_is_an_upgrade() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_websocket_upgrade(&Method::GET, Version::HTTP_11, &ws));
        assert!(!is_websocket_upgrade(&Method::POST, Version::HTTP_11, &ws));
        assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_10, &ws));
        for (connection, upgrade) in [
            ("Upgrade, HTTP2-Settings", "h2c"),
            ("upgrade", "websocket, h2c"),
            ("upgrade", "TLS/1.0"),
            ("keep-alive", "websocket"),
        ] {
            let h = map(&[("connection", connection), ("upgrade", upgrade)]);
            assert!(
                !is_websocket_upgrade(&Method::GET, Version::HTTP_11, &h),
                "{upgrade}"
            );
        }
        let two = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
        ]);
        assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_11, &two));
    }

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        assert_eq!(
            request_id(&map(&[("x-request-id", "abc-123_x.y:z")])),
            "abc-123_x.y:z"
        );
        for bad in ["", "has space", "semi;colon", &"a".repeat(129)] {
            let id = request_id(&map(&[("x-request-id", bad)]));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let two = map(&[("x-request-id", "a"), ("x-request-id", "b")]);
        assert_eq!(request_id(&two).len(), 32);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.5",
            "100.99.10.255",
            "255.255.255.255",
            "::1",
            "2001:db8::5",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_is_replaced_unless_the_peer_is_trusted() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ]);
        set_forwarded(
            &mut h,
            peer,
            false,
            "https",
            Some(HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.5");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");

        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
        ]);
        set_forwarded(
            &mut h,
            peer,
            true,
            "https",
            Some(HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.5");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    proptest::proptest! {
        /// What a CGI-style upstream reads (`_` and `-` alike, case ignored) after scrubbing in
        /// `allow` mode never names a header the gateway removes or sets, unless the client's own
        /// spelling was dash-only (and then the gateway overwrote or removed that very name); in
        /// `drop` mode no `_` is left at all.
        #[test]
        fn no_underscore_spelling_survives_as_an_owned_name(
            names in proptest::collection::vec("[a-z]{1,4}([-_][a-z]{1,8}){0,3}", 0..12),
            owned_pick in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let owned: Vec<&HeaderName> = owned_names().collect();
            let mut all: Vec<String> = names;
            // Sprinkle `_`-spellings of owned names among the random ones.
            for i in owned_pick {
                all.push(owned[i % owned.len()].as_str().replace('-', "_"));
            }
            let injected = [HeaderName::from_static("x-auth-subject")];
            all.push("x_auth_subject".into());
            let mut h = HeaderMap::new();
            for n in &all {
                h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("v"));
            }
            let mut dropped = h.clone();
            strip_underscore_names(&mut dropped, true, &injected);
            proptest::prop_assert!(!has_underscore_names(&dropped));
            strip_underscore_names(&mut h, false, &injected);
            for name in h.keys().filter(|n| n.as_str().contains('_')) {
                let cgi = name.as_str().replace('_', "-");
                proptest::prop_assert!(
                    !owned_names().any(|o| o.as_str() == cgi)
                        && !injected.iter().any(|o| o.as_str() == cgi),
                    "{name} survived"
                );
            }
        }
    }
}
