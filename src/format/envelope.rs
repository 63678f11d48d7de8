//! The envelope every stored object travels in, and the chunk id hash (`docs/borg-format.md` §3).
//!
//! Encrypted types store `type(1) ‖ MAC(32) ‖ IV_low8(8) ‖ AES-256-CTR(payload)`. The MAC covers
//! only `IV_low8 ‖ ciphertext`, not the type byte, and for the BLAKE2b types it is an *unkeyed*
//! BLAKE2b-256 over the 128-byte key followed by the data — not BLAKE2b's keyed mode. The counter
//! block is `00×8 ‖ IV_low8`, incremented as one 128-bit big-endian number.
//!
//! Plaintext and authenticated types store `type(1) ‖ payload`; their integrity comes from the id
//! check after decompression (and, for the manifest, from its TAM).
//!
//! Choosing IVs is not done here: the caller must reserve them first (`docs/borg-format.md` §3.5;
//! `ops::nonces` does), and passes the IV to [`ObjectKey::seal`].

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::compress;
use super::key::{HashAlgorithm, KeyMaterial, KeyType, hex};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<Sha256>;

/// A chunk or object id: 32 bytes.
pub type ObjectId = [u8; 32];

/// The manifest's fixed id.
pub const MANIFEST_ID: ObjectId = [0u8; 32];

/// Bytes the AES envelope adds: type, MAC and IV.
pub const ENCRYPTED_OVERHEAD: usize = 1 + 32 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("object {id} is empty")]
    Empty { id: String },
    #[error("object {id} has type byte 0x{found:02x}, but the repository key is {expected}")]
    WrongType {
        id: String,
        found: u8,
        expected: &'static str,
    },
    #[error("object {id} is truncated ({len} bytes)")]
    Truncated { id: String, len: usize },
    #[error("MAC mismatch in object {id}: the object is corrupt or was tampered with")]
    MacMismatch { id: String },
    #[error("object {id} does not match its id (hash of the contents differs): corrupt data")]
    IdMismatch { id: String },
    #[error("object {id}: {source}")]
    Compression {
        id: String,
        #[source]
        source: compress::CompressError,
    },
}

/// Everything needed to seal and open objects of one repository.
#[derive(Clone)]
pub struct ObjectKey {
    key_type: KeyType,
    /// `None` only for the `none` key type.
    material: Option<KeyMaterial>,
    /// Pre-keyed MAC states, cloned per use: keying HMAC costs two compression rounds.
    id_hmac: Option<HmacSha256>,
    mac_hmac: Option<HmacSha256>,
}

impl std::fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

impl ObjectKey {
    /// The key of a `none` repository: no secret, SHA-256 ids, plaintext objects.
    pub fn plaintext() -> Self {
        ObjectKey {
            key_type: KeyType::Plaintext,
            material: None,
            id_hmac: None,
            mac_hmac: None,
        }
    }

    /// A key for `key_type` with its unlocked material (`Plaintext` has none and ignores it).
    pub fn new(key_type: KeyType, material: KeyMaterial) -> Self {
        if key_type == KeyType::Plaintext {
            return Self::plaintext();
        }
        let key_type = if key_type == KeyType::LegacyPassphrase {
            KeyType::Repokey
        } else {
            key_type
        };
        let hmac_based = key_type.hash_algorithm() == HashAlgorithm::HmacSha256;
        ObjectKey {
            key_type,
            id_hmac: hmac_based.then(|| keyed_hmac(&material.id_key)),
            mac_hmac: (hmac_based && key_type.is_encrypted())
                .then(|| keyed_hmac(&material.enc_hmac_key)),
            material: Some(material),
        }
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn material(&self) -> Option<&KeyMaterial> {
        self.material.as_ref()
    }

    /// The buzhash seed (0 for `none`).
    pub fn chunk_seed(&self) -> i32 {
        self.material.as_ref().map_or(0, |m| m.chunk_seed)
    }

    /// The id of a plaintext chunk: what dedup and integrity checks key on.
    pub fn id_hash(&self, data: &[u8]) -> ObjectId {
        match self.key_type.hash_algorithm() {
            HashAlgorithm::Sha256 => Sha256::digest(data).into(),
            HashAlgorithm::HmacSha256 => {
                let mut mac = self.id_hmac.clone().expect("HMAC key types have an id key");
                mac.update(data);
                mac.finalize().into_bytes().into()
            }
            HashAlgorithm::Blake2b => {
                let key = &self
                    .material
                    .as_ref()
                    .expect("BLAKE2b types have keys")
                    .id_key;
                blake2b_over_key(key, data)
            }
        }
    }

    /// [`ObjectKey::id_hash`] of several chunks at once. With BLAKE2b the chunks are hashed in
    /// the lanes of the vector unit, four at a time with AVX2, for about three times the
    /// throughput of one after the other (the content workers and the item stream store
    /// chunks in batches for this).
    pub fn id_hashes<C: AsRef<[u8]>>(&self, chunks: &[C]) -> Vec<ObjectId> {
        let HashAlgorithm::Blake2b = self.key_type.hash_algorithm() else {
            return chunks.iter().map(|c| self.id_hash(c.as_ref())).collect();
        };
        let key = &self
            .material
            .as_ref()
            .expect("BLAKE2b types have keys")
            .id_key;
        blake2b_over_key_many(key, chunks)
    }

    /// The MAC of a stored object: over `IV_low8 ‖ ciphertext`, which is `stored[33..]`.
    fn mac(&self, iv_and_ciphertext: &[u8]) -> [u8; 32] {
        match self.key_type.hash_algorithm() {
            HashAlgorithm::Blake2b => {
                let key = &self.material.as_ref().expect("keyed").enc_hmac_key;
                blake2b_over_key(key, iv_and_ciphertext)
            }
            _ => {
                let mut mac = self
                    .mac_hmac
                    .clone()
                    .expect("encrypted HMAC types have a MAC key");
                mac.update(iv_and_ciphertext);
                mac.finalize().into_bytes().into()
            }
        }
    }

    /// Wraps an already compressed payload. For encrypted types `iv` must come from a nonce
    /// reservation and must not be used again; the next free IV is `iv + cipher_blocks(len)`.
    pub fn seal(&self, payload: &[u8], iv: u64) -> Vec<u8> {
        let mut buffer = vec![0u8; self.envelope_headroom()];
        buffer.extend_from_slice(payload);
        let mut one = [buffer];
        self.seal_reserved(&mut one, &[iv]);
        let [sealed] = one;
        sealed
    }

    /// The bytes the envelope puts in front of the payload: the type byte, and for encrypted
    /// types the MAC and the IV.
    pub fn envelope_headroom(&self) -> usize {
        if self.key_type.is_encrypted() {
            ENCRYPTED_OVERHEAD
        } else {
            1
        }
    }

    /// [`ObjectKey::seal`] for payloads at `buffer[envelope_headroom()..]`, each with its IV:
    /// the envelope is written into the reserved front and the payload encrypted where it is,
    /// with no copy. With BLAKE2b the MACs of the batch are computed in the vector lanes
    /// together, as in [`ObjectKey::id_hashes`].
    pub fn seal_reserved(&self, buffers: &mut [Vec<u8>], ivs: &[u64]) {
        assert_eq!(buffers.len(), ivs.len(), "one IV per object");
        for buffer in buffers.iter_mut() {
            buffer[0] = self.key_type as u8;
        }
        if !self.key_type.is_encrypted() {
            return;
        }
        let material = self.material.as_ref().expect("encrypted types have keys");
        for (buffer, &iv) in buffers.iter_mut().zip(ivs) {
            buffer[33..41].copy_from_slice(&iv.to_be_bytes());
            ctr_cipher(&material.enc_key, iv).apply_keystream(&mut buffer[41..]);
        }
        let macs = match self.key_type.hash_algorithm() {
            HashAlgorithm::Blake2b => {
                let signed: Vec<&[u8]> = buffers.iter().map(|b| &b[33..]).collect();
                blake2b_over_key_many(&material.enc_hmac_key, &signed)
            }
            _ => buffers.iter().map(|b| self.mac(&b[33..])).collect(),
        };
        for (buffer, mac) in buffers.iter_mut().zip(macs) {
            buffer[1..33].copy_from_slice(&mac);
        }
    }

    /// Checks the envelope of a stored object and returns its (still compressed) payload.
    pub fn unseal(&self, id: &ObjectId, stored: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let id_hex = || hex(id);
        let &type_byte = stored
            .first()
            .ok_or_else(|| EnvelopeError::Empty { id: id_hex() })?;
        let stored_type = KeyType::from_byte(type_byte);
        if !stored_type.is_some_and(|t| self.key_type.accepts(t)) {
            return Err(EnvelopeError::WrongType {
                id: id_hex(),
                found: type_byte,
                expected: self.key_type.mode_name(),
            });
        }
        if !self.key_type.is_encrypted() {
            return Ok(stored[1..].to_vec());
        }
        if stored.len() < ENCRYPTED_OVERHEAD {
            return Err(EnvelopeError::Truncated {
                id: id_hex(),
                len: stored.len(),
            });
        }
        let expected = self.mac(&stored[33..]);
        // Constant-time: the MAC is the authenticity check.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &stored[1..33])) {
            return Err(EnvelopeError::MacMismatch { id: id_hex() });
        }
        let iv = u64::from_be_bytes(stored[33..41].try_into().expect("8 bytes"));
        let mut payload = stored[41..].to_vec();
        let material = self.material.as_ref().expect("encrypted types have keys");
        ctr_cipher(&material.enc_key, iv).apply_keystream(&mut payload);
        Ok(payload)
    }

    /// Opens a stored object completely: envelope, decompression, and the id check (skipped for
    /// the manifest, whose id is fixed; its TAM protects it instead).
    pub fn open(
        &self,
        id: &ObjectId,
        stored: &[u8],
        size_hint: Option<usize>,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let payload = self.unseal(id, stored)?;
        let plaintext = compress::decompress(&payload, size_hint).map_err(|source| {
            EnvelopeError::Compression {
                id: hex(id),
                source,
            }
        })?;
        if *id != MANIFEST_ID && self.id_hash(&plaintext) != *id {
            return Err(EnvelopeError::IdMismatch { id: hex(id) });
        }
        Ok(plaintext)
    }

    /// The IV of a stored encrypted object (borg seeds its counter from the manifest's).
    pub fn stored_iv(&self, stored: &[u8]) -> Option<u64> {
        if !self.key_type.is_encrypted() {
            return None;
        }
        Some(u64::from_be_bytes(stored.get(33..41)?.try_into().ok()?))
    }
}

/// AES-CTR blocks a payload of `len` bytes consumes.
pub fn cipher_blocks(len: usize) -> u64 {
    (len as u64).div_ceil(16)
}

fn ctr_cipher(enc_key: &[u8; 32], iv: u64) -> Aes256Ctr {
    let mut block = [0u8; 16];
    block[8..].copy_from_slice(&iv.to_be_bytes());
    Aes256Ctr::new(enc_key.into(), &block.into())
}

/// Borg's `blake2b_256(key, data)`: plain BLAKE2b-256 of `key ‖ data` (not BLAKE2's keyed
/// mode). blake2b_simd picks AVX2 at run time, about twice the throughput of a portable
/// implementation; this hash runs twice over every chunk (MAC and id), so it matters.
fn blake2b_over_key(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut state = blake2b_after_key(key);
    state.update(data);
    blake2b_256_of(&state)
}

/// A BLAKE2b-256 state that has consumed `key`, for [`blake2b_over_key`] and its batches.
fn blake2b_after_key(key: &[u8]) -> blake2b_simd::State {
    let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
    state.update(key);
    state
}

/// [`blake2b_over_key`] of each input, hashed side by side in the vector lanes
/// (`blake2b_simd::many` refills a lane as soon as its input ends, so lengths may differ).
fn blake2b_over_key_many<C: AsRef<[u8]>>(key: &[u8], inputs: &[C]) -> Vec<[u8; 32]> {
    let mut states: Vec<blake2b_simd::State> =
        inputs.iter().map(|_| blake2b_after_key(key)).collect();
    blake2b_simd::many::update_many(states.iter_mut().zip(inputs));
    states.iter().map(blake2b_256_of).collect()
}

fn blake2b_256_of(state: &blake2b_simd::State) -> [u8; 32] {
    state
        .finalize()
        .as_bytes()
        .try_into()
        .expect("a 32-byte hash")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Key material of the `docs/borg-format.md` §3.6 vectors.
    pub(crate) fn vector_key(key_type: KeyType) -> ObjectKey {
        let enc_key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let (enc_hmac_key, id_key) = if key_type.hash_algorithm() == HashAlgorithm::Blake2b {
            let pad = |start: u8| {
                let mut k: Vec<u8> = (start..start + 64).collect();
                k.extend([0u8; 64]);
                k
            };
            (pad(100), pad(164))
        } else {
            ((0x20..0x40).collect(), (0x40..0x60).collect())
        };
        let material = KeyMaterial {
            enc_key,
            enc_hmac_key,
            id_key,
            chunk_seed: 0,
            repository_id: [0; 32],
            tam_required: Some(true),
        };
        ObjectKey::new(key_type, material)
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn id_hashes_of_a_batch_equal_id_hash_of_each() {
        let chunks: Vec<Vec<u8>> = [0usize, 1, 95, 96, 97, 128, 1000, 70_000, 131_072, 3]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 % 256) as u8).collect())
            .collect();
        for key_type in [KeyType::Blake2Repokey, KeyType::Repokey, KeyType::Plaintext] {
            let key = vector_key(key_type);
            let each: Vec<ObjectId> = chunks.iter().map(|c| key.id_hash(c)).collect();
            assert_eq!(key.id_hashes(&chunks), each, "{key_type:?}");
        }
    }

    #[test]
    fn a_sealed_batch_equals_each_sealed_alone() {
        let payloads: Vec<Vec<u8>> = [0usize, 7, 87, 88, 1000, 70_000, 5]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 % 251) as u8).collect())
            .collect();
        let ivs: Vec<u64> = (0..payloads.len() as u64)
            .map(|i| 1000 + i * 5000)
            .collect();
        for key_type in [
            KeyType::Blake2Repokey,
            KeyType::Repokey,
            KeyType::Blake2Authenticated,
            KeyType::Plaintext,
        ] {
            let key = vector_key(key_type);
            let each: Vec<Vec<u8>> = payloads
                .iter()
                .zip(&ivs)
                .map(|(p, &iv)| key.seal(p, iv))
                .collect();
            let mut batch: Vec<Vec<u8>> = payloads
                .iter()
                .map(|p| [vec![0; key.envelope_headroom()], p.clone()].concat())
                .collect();
            key.seal_reserved(&mut batch, &ivs);
            assert_eq!(batch, each, "{key_type:?}");
            for (sealed, payload) in batch.iter().zip(&payloads) {
                assert_eq!(&key.unseal(&[1; 32], sealed).unwrap(), payload);
            }
        }
    }

    #[test]
    fn spec_vectors_for_hmac_and_blake2_envelopes() {
        let payload = compress::Compression::None.compress(b"hello borg");
        let cases = [
            (
                KeyType::Repokey,
                "0343c9fd5c7e19fdde99558cc2089c24c646931ec439725e067861a6ecd971d1ba",
                "88a9553c7e0cec99daaef60ad50dd1c4df79feb989ec031e3f801e9f08e881a1",
            ),
            (
                KeyType::Blake2Repokey,
                "05b77537b5805ec802825ef11be5ec48cfb3b23dea8e0d5bbf2cde2c832655683b",
                "11d49e7a20bf5d9d8bcc802a5f80801a9b6daf56987ba4a6a8fa5f09d79f9344",
            ),
        ];
        for (key_type, head, id) in cases {
            let key = vector_key(key_type);
            let sealed = key.seal(&payload, 0x0102030405060708);
            let expected = unhex(&format!(
                "{head}0102030405060708{}",
                "5e85e2f07038a3472c447553"
            ));
            assert_eq!(sealed, expected, "{key_type:?}");
            assert_eq!(hex(&key.id_hash(b"hello borg")), id);
            assert_eq!(
                key.open(&key.id_hash(b"hello borg"), &sealed, None)
                    .unwrap(),
                b"hello borg"
            );
        }
        assert_eq!(cipher_blocks(payload.len()), 1);
    }

    #[test]
    fn tampering_is_detected_and_names_the_object() {
        let key = vector_key(KeyType::Repokey);
        let id = key.id_hash(b"data");
        let mut sealed = key.seal(&compress::Compression::None.compress(b"data"), 7);
        sealed[45] ^= 1;
        let err = key.open(&id, &sealed, None).unwrap_err();
        assert_eq!(err, EnvelopeError::MacMismatch { id: hex(&id) });
        assert!(err.to_string().contains(&hex(&id)));
        // The type byte is not authenticated, but a foreign type is refused.
        let mut foreign = key.seal(b"\0\0data", 8);
        foreign[0] = 0x05;
        assert!(matches!(
            key.open(&id, &foreign, None),
            Err(EnvelopeError::WrongType { .. })
        ));
        // Legacy type 0x01 is read as repokey.
        let mut legacy = key.seal(b"\0\0data", 9);
        legacy[0] = 0x01;
        assert_eq!(key.open(&id, &legacy, None).unwrap(), b"data");
        assert!(matches!(
            key.open(&id, &legacy[..20], None),
            Err(EnvelopeError::Truncated { .. })
        ));
    }

    #[test]
    fn plaintext_ids_are_sha256() {
        let key = ObjectKey::plaintext();
        assert_eq!(
            hex(&key.id_hash(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let sealed = key.seal(b"\0\0abc", 0);
        assert_eq!(sealed, b"\x02\0\0abc");
        assert!(matches!(
            key.open(&[1; 32], &sealed, None),
            Err(EnvelopeError::IdMismatch { .. })
        ));
    }
}
