//! Parses the input as a WebSocket upgrade request for `/mqtt`, and checks that shorter and
//! longer inputs agree with it (see `herald_fuzz` for the checks).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::ws_upgrade(data);
});
