//! borg's msgpack dialect: whole-object decoding and the streaming decoder, split at every byte
//! the input chooses. Decoding then re-encoding must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_borg::format::msgpack::{self, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = msgpack::decode(data) {
        let again = msgpack::decode(&value.to_bytes()).expect("our own encoding decodes");
        assert_eq!(again.to_bytes(), value.to_bytes());
    }
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut stream = StreamDecoder::new();
    let _ = stream.feed(&data[..split]).and_then(|_| stream.feed(&data[split..]));
});
