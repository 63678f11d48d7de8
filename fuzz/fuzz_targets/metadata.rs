//! Manifest and archive objects (TAM verification and models) and item streams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::archive::{ArchiveMeta, ItemStreamDecoder};
use mailcow_borg::format::envelope::ObjectKey;
use mailcow_borg::format::key::{KeyMaterial, KeyType};
use mailcow_borg::format::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let keyed = ObjectKey::new(
        KeyType::Repokey,
        KeyMaterial::from_random(KeyType::Repokey, &[1; 100], &[2; 128], [3; 32]),
    );
    for key in [ObjectKey::plaintext(), keyed] {
        let _ = Manifest::unpack(&key, data);
        let _ = ArchiveMeta::unpack(&key, data);
    }
    // The TAM check guards the models above, so reach them directly too.
    if let Ok(value) = mailcow_borg::format::msgpack::decode(data) {
        let _ = Manifest::from_value(value.clone());
        let _ = ArchiveMeta::from_value(value);
    }
    let mut items = ItemStreamDecoder::new();
    let _ = items.feed(data);
    let _ = items.finish();
});
