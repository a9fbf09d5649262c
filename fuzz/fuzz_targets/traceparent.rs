//! `parse_traceparent` on any bytes: never panics, and what it accepts renders back to a
//! version-00 header that parses to the same ids.
#![no_main]

use jwt_gateway::trace::{parse_traceparent, traceparent_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(parent) = parse_traceparent(data) {
        assert_ne!(parent.trace_id, [0; 16]);
        assert_ne!(parent.span_id, [0; 8]);
        let rendered = traceparent_value(&parent.trace_id, &parent.span_id, parent.sampled());
        let again =
            parse_traceparent(rendered.as_bytes()).expect("the gateway's own header parses");
        assert_eq!(
            (again.trace_id, again.span_id, again.sampled()),
            (parent.trace_id, parent.span_id, parent.sampled())
        );
    }
});
