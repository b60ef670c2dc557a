//! Judges the input as a JWT in a CONNECT's password, with an HMAC secret configured, and
//! checks that only tokens the secret signed and that have not expired are accepted (see
//! `herald_fuzz` for the checks).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::jwt(data);
});
