//! `normalize_path` on any UTF-8 path, under both slash policies: no panic, and an accepted path
//! is a fixed point that carries none of the shapes normalization exists to remove.
#![no_main]

use jwt_gateway::path::{normalize_path, PathPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, &str)| {
    let (merge_slashes, raw) = input;
    let policy = PathPolicy {
        merge_slashes,
        case_insensitive: false,
    };
    let Ok(out) = normalize_path(raw, policy) else {
        return;
    };
    // The upstream sees `out`; were it not a fixed point, the gateway and an upstream that
    // normalizes again would judge two different paths.
    assert_eq!(
        normalize_path(&out, policy).as_deref(),
        Ok(out.as_str()),
        "raw = {raw:?}"
    );
    assert!(out.starts_with('/'), "raw = {raw:?}, out = {out:?}");
    for bad in ["/../", "%2F", "%2f", "%5C", "%5c", "\\", "//"] {
        assert!(
            !out.contains(bad),
            "raw = {raw:?}, out = {out:?} contains {bad:?}"
        );
    }
    // A segment that is only parameters would vanish at an upstream that drops them; as the
    // last one it is only a trailing slash.
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        assert!(
            !seg.starts_with(';') && !seg.starts_with("%3B"),
            "raw = {raw:?}, out = {out:?} has a parameter-only segment"
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
