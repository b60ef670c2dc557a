//! Feeds the input to a WebSocket de-framer in pieces and compares the MQTT bytes it gives
//! with a plain reference reading (see `herald_fuzz` for the checks and the input layout).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::ws_frames(data);
});
