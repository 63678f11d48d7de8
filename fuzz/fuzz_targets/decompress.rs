//! Every compressor's decoder, chosen by the payload's own header, as read from a repository.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::compress;

fuzz_target!(|data: &[u8]| {
    let _ = compress::decompress(data, None);
    let _ = compress::decompress(data, Some(1024));
});
