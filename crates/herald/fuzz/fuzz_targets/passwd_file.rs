//! Parses the input as a password file, renders it back, and checks passwords against its
//! cheap entries (see `herald_fuzz` for the checks).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::passwd_file(data);
});
