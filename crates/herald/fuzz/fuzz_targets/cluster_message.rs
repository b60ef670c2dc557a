//! Reads the input as a NATS subject and a message envelope from another node, and checks
//! that what reads is made again the same (see `herald_fuzz`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::cluster_message(data);
});
