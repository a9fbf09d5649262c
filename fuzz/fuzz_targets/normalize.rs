//! `normalize_path` on any UTF-8 path: no panic, and an accepted path is a fixed point that
//! carries none of the shapes normalization exists to remove.
#![no_main]

use jwt_gateway::path::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(out) = normalize_path(raw) else {
        return;
    };
    // The upstream sees `out`; were it not a fixed point, the gateway and an upstream that
    // normalizes again would judge two different paths.
    assert_eq!(
        normalize_path(&out).as_deref(),
        Ok(out.as_str()),
        "raw = {raw:?}"
    );
    assert!(out.starts_with('/'), "raw = {raw:?}, out = {out:?}");
    for bad in ["/../", "%2F", "%2f", "%5C", "%5c", "\\"] {
        assert!(
            !out.contains(bad),
            "raw = {raw:?}, out = {out:?} contains {bad:?}"
        );
    }
    assert!(
        out.bytes().all(|b| matches!(b, 0x20..=0x7E)),
        "raw = {raw:?}, out = {out:?} has a control or non-ASCII byte"
    );
    assert!(
        out.split('/').all(|seg| seg != "." && seg != ".."),
        "raw = {raw:?}, out = {out:?} keeps a dot segment"
    );
});
