//! Parses the input as a PROXY protocol (v1 or v2) header, and checks that shorter and
//! longer inputs agree with it (see `herald_fuzz` for the checks).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::proxy_header(data);
});
