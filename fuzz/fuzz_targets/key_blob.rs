//! Key blobs and key files as found in a repository config or on disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::key::{EncryptedKey, Keyfile};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Keyfile::parse(&text);
    let _ = EncryptedKey::from_text(&text);
    if let Ok(blob) = EncryptedKey::from_msgpack(data) {
        // A hostile iteration count only costs time; keep the fuzzer fast.
        if blob.iterations <= 16 {
            let _ = blob.open(b"passphrase");
        }
    }
});
