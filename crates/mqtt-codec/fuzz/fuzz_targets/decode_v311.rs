//! Decodes the input as a stream of MQTT 3.1.1 packets and round-trips each one
//! (see `mqtt_codec_fuzz` for the checks and the input layout).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    mqtt_codec_fuzz::decode_stream(ProtocolVersion::V3_1_1, data);
});
