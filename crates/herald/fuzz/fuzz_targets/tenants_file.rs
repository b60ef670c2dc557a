//! Reads the input as a tenants file, and checks that an accepted one holds only valid
//! tenants and settings and renders back to the same tenants (see `herald_fuzz`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::tenants_file(data);
});
