//! The config compiler on any YAML text: every problem is a `ConfigError`, never a panic.
//! Compiling reads no files (TLS and revocation paths are only joined to `base`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = jwt_gateway::config::compile_str(text, Path::new("."));
});
