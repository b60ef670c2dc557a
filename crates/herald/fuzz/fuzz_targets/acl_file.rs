//! Reads the input as an ACL file, and checks that no subscription is allowed to a filter
//! matching a topic the client may not read (see `herald_fuzz` for the checks).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::acl_file(data);
});
