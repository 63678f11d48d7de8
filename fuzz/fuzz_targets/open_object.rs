//! Opening a stored object (envelope, MAC, decompression, id check) under every key type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::envelope::ObjectKey;
use mailcow_borg::format::key::{KeyMaterial, KeyType};

fuzz_target!(|data: &[u8]| {
    for key_type in KeyType::ALL {
        let key = if key_type == KeyType::Plaintext {
            ObjectKey::plaintext()
        } else {
            ObjectKey::new(key_type, KeyMaterial::from_random(key_type, &[1; 100], &[2; 128], [3; 32]))
        };
        let _ = key.open(&[0; 32], data, None);
        let _ = key.open(&[7; 32], data, Some(64));
    }
});
