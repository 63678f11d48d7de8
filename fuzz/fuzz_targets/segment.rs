//! borg segment files as a repository host could leave them: every entry read, none trusted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::segment;

fuzz_target!(|data: &[u8]| {
    // The iterator ends after the first error; parse collects the same.
    let _ = segment::parse(data);
});
