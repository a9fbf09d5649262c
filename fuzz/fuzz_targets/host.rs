//! `parse_host` on any bytes: no panic, and an accepted host is one that every reader splits the
//! same way: a name of letters, digits, `-`, `.`, `_` (or a bracketed IPv6 literal), lower-case,
//! an optional all-digit port, and it reads back as itself.
#![no_main]

use jwt_gateway::proxy::host::parse_host;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Ok(host) = parse_host(raw) else {
        return;
    };
    let text = host.as_str();
    let name = host.name();
    assert!(text.starts_with(name), "{raw:?}");
    let port = &text[name.len()..];
    assert!(
        port.is_empty()
            || (port.starts_with(':') && port.len() > 1 && port[1..].bytes().all(|b| b.is_ascii_digit())),
        "{raw:?} -> port {port:?}"
    );
    if let Some(literal) = name.strip_prefix('[') {
        assert!(literal.ends_with(']'), "{raw:?}");
    } else {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')),
            "{raw:?} -> name {name:?}"
        );
    }
    assert_eq!(parse_host(text.as_bytes()).as_ref(), Ok(&host), "{raw:?}");
    assert!(host.header_value().is_some(), "{raw:?}");
});
