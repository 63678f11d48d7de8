//! Borg 1.x keys: the seven key types, the secret key material, and the passphrase-protected key
//! blob that holds it (`docs/borg-format.md` §2.2–§2.5, §3.1).
//!
//! The blob is a msgpack map `{algorithm, data, hash, iterations, salt, version}`: `data` is the
//! inner key map encrypted with AES-256-CTR (all-zero IV) under a key-encryption key derived by
//! PBKDF2-HMAC-SHA256 from the passphrase, and `hash` is an HMAC-SHA256 of the inner plaintext under
//! that same derived key. That HMAC is the only way to tell a wrong passphrase from a right one, so
//! a blob that does not decode at all is reported as corrupt, never as a wrong passphrase.
//!
//! Repokey modes keep the blob's base64 text in the repository config; keyfile modes keep it in a
//! file that starts with `BORG_KEY <repository id hex>`.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::msgpack::{self, Value};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<Sha256>;

/// Borg's `PBKDF2_ITERATIONS`; stored in every blob, and the stored value is what counts on read.
pub const PBKDF2_ITERATIONS: u32 = 100_000;

/// What a stored object's first byte says about how it was made (`docs/borg-format.md` §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyType {
    Keyfile = 0x00,
    /// Pre-1.0 passphrase mode; borg reads it as repokey (`identify_key`).
    LegacyPassphrase = 0x01,
    Plaintext = 0x02,
    Repokey = 0x03,
    Blake2Keyfile = 0x04,
    Blake2Repokey = 0x05,
    Blake2Authenticated = 0x06,
    Authenticated = 0x07,
}

/// The hash a key type uses for chunk ids (and, for encrypted types, for the MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// Plain SHA-256 of the data (mode `none`).
    Sha256,
    HmacSha256,
    /// Unkeyed BLAKE2b-256 over a 128-byte key followed by the data.
    Blake2b,
}

/// Where a key type keeps its key blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStorage {
    None,
    Repository,
    Keyfile,
}

impl KeyType {
    pub const ALL: [KeyType; 8] = [
        KeyType::Keyfile,
        KeyType::LegacyPassphrase,
        KeyType::Plaintext,
        KeyType::Repokey,
        KeyType::Blake2Keyfile,
        KeyType::Blake2Repokey,
        KeyType::Blake2Authenticated,
        KeyType::Authenticated,
    ];

    pub fn from_byte(byte: u8) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| *t as u8 == byte)
    }

    /// The repository's key type, from the first byte of its stored manifest object, as borg's
    /// `key_factory` decides it.
    pub fn identify(manifest_object: &[u8]) -> Result<KeyType, KeyError> {
        let &byte = manifest_object.first().ok_or(KeyError::EmptyManifest)?;
        match KeyType::from_byte(byte) {
            Some(KeyType::LegacyPassphrase) => Ok(KeyType::Repokey),
            Some(t) => Ok(t),
            None => Err(KeyError::UnknownKeyType(byte)),
        }
    }

    /// The type as borg's `--encryption` names it.
    pub fn mode_name(self) -> &'static str {
        match self {
            KeyType::Keyfile => "keyfile",
            KeyType::LegacyPassphrase | KeyType::Repokey => "repokey",
            KeyType::Plaintext => "none",
            KeyType::Blake2Keyfile => "keyfile-blake2",
            KeyType::Blake2Repokey => "repokey-blake2",
            KeyType::Blake2Authenticated => "authenticated-blake2",
            KeyType::Authenticated => "authenticated",
        }
    }

    /// The key class's `NAME`, as `borg info` shows it.
    pub fn display_name(self) -> &'static str {
        match self {
            KeyType::Keyfile => "key file",
            KeyType::LegacyPassphrase | KeyType::Repokey => "repokey",
            KeyType::Plaintext => "plaintext",
            KeyType::Blake2Keyfile => "key file BLAKE2b",
            KeyType::Blake2Repokey => "repokey BLAKE2b",
            KeyType::Blake2Authenticated => "authenticated BLAKE2b",
            KeyType::Authenticated => "authenticated",
        }
    }

    pub fn from_mode_name(name: &str) -> Option<KeyType> {
        KeyType::ALL
            .into_iter()
            .filter(|t| *t != KeyType::LegacyPassphrase)
            .find(|t| t.mode_name() == name)
    }

    /// Whether object payloads are encrypted (AES-256-CTR + MAC envelope) or stored in the clear.
    pub fn is_encrypted(self) -> bool {
        !matches!(
            self,
            KeyType::Plaintext | KeyType::Blake2Authenticated | KeyType::Authenticated
        )
    }

    pub fn hash_algorithm(self) -> HashAlgorithm {
        match self {
            KeyType::Plaintext => HashAlgorithm::Sha256,
            KeyType::Blake2Keyfile | KeyType::Blake2Repokey | KeyType::Blake2Authenticated => {
                HashAlgorithm::Blake2b
            }
            _ => HashAlgorithm::HmacSha256,
        }
    }

    pub fn storage(self) -> KeyStorage {
        match self {
            KeyType::Plaintext => KeyStorage::None,
            KeyType::Keyfile | KeyType::Blake2Keyfile => KeyStorage::Keyfile,
            _ => KeyStorage::Repository,
        }
    }

    /// Whether an object of type `stored` may be opened with a key of this type.
    pub fn accepts(self, stored: KeyType) -> bool {
        stored == self
            || (self == KeyType::Repokey && stored == KeyType::LegacyPassphrase)
            || (self == KeyType::LegacyPassphrase && stored == KeyType::Repokey)
    }
}

/// The secret inside a key blob (borg's `Key` item, `docs/borg-format.md` §2.4).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub enc_key: [u8; 32],
    /// 32 bytes for HMAC-SHA256 types, 128 (64 random + 64 zero) for BLAKE2b types.
    pub enc_hmac_key: Vec<u8>,
    /// Same lengths as `enc_hmac_key`.
    pub id_key: Vec<u8>,
    /// Seeds the buzhash table; signed 32-bit, may be negative.
    pub chunk_seed: i32,
    pub repository_id: [u8; 32],
    /// `None` for keys written before borg 1.0.9, which had no such field.
    pub tam_required: Option<bool>,
}

impl std::fmt::Debug for KeyMaterial {
    /// Never prints secrets, so key material can sit inside types that derive Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("repository_id", &hex(&self.repository_id))
            .field("chunk_seed", &self.chunk_seed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("wrong passphrase: the key could not be unlocked with it")]
    WrongPassphrase,
    #[error("the key is corrupt: {0}")]
    Corrupt(String),
    #[error("the key uses KDF algorithm {0:?}, which borg 1.x does not have (a borg 2 key?)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported key blob version {0}")]
    UnsupportedVersion(i128),
    #[error(
        "unknown key type 0x{0:02x} in the manifest: not a borg 1.x repository, or a newer borg made it"
    )]
    UnknownKeyType(u8),
    #[error("the manifest object is empty: the repository is damaged")]
    EmptyManifest,
    #[error("key file belongs to repository {found}, not {expected}")]
    WrongRepository { expected: String, found: String },
}

fn corrupt(what: impl Into<String>) -> KeyError {
    KeyError::Corrupt(what.into())
}

impl KeyMaterial {
    /// Splits 100 random bytes as borg does for a new key (`docs/borg-format.md` §2.4); BLAKE2b
    /// types then take fresh 64-byte random halves (`blake2_random`) padded with zeros for their
    /// two MAC keys.
    pub fn from_random(
        key_type: KeyType,
        random: &[u8; 100],
        blake2_random: &[u8; 128],
        repository_id: [u8; 32],
    ) -> KeyMaterial {
        let mut enc_key = [0u8; 32];
        enc_key.copy_from_slice(&random[0..32]);
        let (enc_hmac_key, id_key) = if key_type.hash_algorithm() == HashAlgorithm::Blake2b {
            let padded = |half: &[u8]| [half, &[0u8; 64]].concat();
            (padded(&blake2_random[..64]), padded(&blake2_random[64..]))
        } else {
            (random[32..64].to_vec(), random[64..96].to_vec())
        };
        KeyMaterial {
            enc_key,
            enc_hmac_key,
            id_key,
            chunk_seed: i32::from_be_bytes([random[96], random[97], random[98], random[99]]),
            repository_id,
            tam_required: Some(true),
        }
    }

    /// The inner key map, packed with sorted keys as borg writes it.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut entries = vec![
            ("chunk_seed", Value::Int(self.chunk_seed as i128)),
            ("enc_hmac_key", Value::raw(self.enc_hmac_key.clone())),
            ("enc_key", Value::raw(self.enc_key.to_vec())),
            ("id_key", Value::raw(self.id_key.clone())),
            ("repository_id", Value::raw(self.repository_id.to_vec())),
            ("version", Value::Int(1)),
        ];
        if let Some(required) = self.tam_required {
            entries.push(("tam_required", Value::Bool(required)));
        }
        Value::sorted_map(entries).to_bytes()
    }

    pub fn from_msgpack(data: &[u8]) -> Result<KeyMaterial, KeyError> {
        let map = msgpack::decode(data).map_err(|e| corrupt(format!("inner key: {e}")))?;
        let bytes = |name: &str| -> Result<Vec<u8>, KeyError> {
            map.get(name)
                .and_then(Value::as_raw)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt(format!("inner key has no {name}")))
        };
        let fixed32 = |name: &str| -> Result<[u8; 32], KeyError> {
            bytes(name)?
                .try_into()
                .map_err(|_| corrupt(format!("{name} is not 32 bytes")))
        };
        match map.get("version").and_then(Value::as_int) {
            Some(1) => {}
            Some(v) => return Err(KeyError::UnsupportedVersion(v)),
            None => return Err(corrupt("inner key has no version")),
        }
        let chunk_seed = map
            .get("chunk_seed")
            .and_then(Value::as_int)
            .and_then(|s| i32::try_from(s).ok())
            .ok_or_else(|| corrupt("chunk_seed missing or not a 32-bit integer"))?;
        let enc_hmac_key = bytes("enc_hmac_key")?;
        let id_key = bytes("id_key")?;
        for (name, key) in [("enc_hmac_key", &enc_hmac_key), ("id_key", &id_key)] {
            if key.len() != 32 && key.len() != 128 {
                return Err(corrupt(format!("{name} has {} bytes", key.len())));
            }
        }
        Ok(KeyMaterial {
            enc_key: fixed32("enc_key")?,
            enc_hmac_key,
            id_key,
            chunk_seed,
            repository_id: fixed32("repository_id")?,
            tam_required: map.get("tam_required").and_then(Value::as_bool),
        })
    }
}

/// The outer, passphrase-protected key blob (borg's `EncryptedKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedKey {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub data: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The key-encryption key: PBKDF2-HMAC-SHA256 of the passphrase with a blob's salt, the slow
/// part of unlocking (100,000 rounds, ~10 ms), so that it can be derived ahead of time.
pub struct Kek([u8; 32]);

impl Kek {
    pub fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Kek {
        let mut kek = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, iterations, &mut kek);
        Kek(kek)
    }
}

fn aes_ctr_zero_iv(key: &[u8; 32], data: &mut [u8]) {
    let mut cipher = Aes256Ctr::new(key.into(), &[0u8; 16].into());
    cipher.apply_keystream(data);
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac
}

impl EncryptedKey {
    /// Encrypts `material` under `passphrase`; `salt` must be 32 fresh random bytes.
    pub fn seal(
        material: &KeyMaterial,
        passphrase: &[u8],
        salt: [u8; 32],
        iterations: u32,
    ) -> Self {
        let Kek(kek) = Kek::derive(passphrase, &salt, iterations);
        let plaintext = material.to_msgpack();
        let hash = hmac_sha256(&kek, &plaintext)
            .finalize()
            .into_bytes()
            .to_vec();
        let mut data = plaintext;
        aes_ctr_zero_iv(&kek, &mut data);
        EncryptedKey {
            salt: salt.to_vec(),
            iterations,
            data,
            hash,
        }
    }

    /// Decrypts with `passphrase`; only the HMAC decides whether the passphrase was right.
    pub fn open(&self, passphrase: &[u8]) -> Result<KeyMaterial, KeyError> {
        self.open_with(&Kek::derive(passphrase, &self.salt, self.iterations))
    }

    /// Decrypts with a key-encryption key derived with this blob's salt and iterations.
    pub fn open_with(&self, Kek(kek): &Kek) -> Result<KeyMaterial, KeyError> {
        let mut plaintext = self.data.clone();
        aes_ctr_zero_iv(kek, &mut plaintext);
        hmac_sha256(kek, &plaintext)
            .verify_slice(&self.hash)
            .map_err(|_| KeyError::WrongPassphrase)?;
        KeyMaterial::from_msgpack(&plaintext)
    }

    pub fn to_msgpack(&self) -> Vec<u8> {
        Value::sorted_map([
            ("algorithm", Value::raw("sha256")),
            ("data", Value::raw(self.data.clone())),
            ("hash", Value::raw(self.hash.clone())),
            ("iterations", Value::Int(self.iterations as i128)),
            ("salt", Value::raw(self.salt.clone())),
            ("version", Value::Int(1)),
        ])
        .to_bytes()
    }

    pub fn from_msgpack(data: &[u8]) -> Result<Self, KeyError> {
        let map = msgpack::decode(data).map_err(|e| corrupt(format!("key blob: {e}")))?;
        if map.as_map().is_none() {
            return Err(corrupt("key blob is not a map"));
        }
        let bytes = |name: &str| -> Result<Vec<u8>, KeyError> {
            map.get(name)
                .and_then(Value::as_raw)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt(format!("key blob has no {name}")))
        };
        let algorithm = bytes("algorithm")?;
        if algorithm != b"sha256" {
            return Err(KeyError::UnsupportedAlgorithm(
                String::from_utf8_lossy(&algorithm).into_owned(),
            ));
        }
        match map.get("version").and_then(Value::as_int) {
            Some(1) => {}
            Some(v) => return Err(KeyError::UnsupportedVersion(v)),
            None => return Err(corrupt("key blob has no version")),
        }
        let iterations = map
            .get("iterations")
            .and_then(Value::as_int)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|i| *i > 0)
            .ok_or_else(|| corrupt("iterations missing or invalid"))?;
        let hash = bytes("hash")?;
        if hash.len() != 32 {
            return Err(corrupt("hash is not 32 bytes"));
        }
        Ok(EncryptedKey {
            salt: bytes("salt")?,
            iterations,
            data: bytes("data")?,
            hash,
        })
    }

    /// Parses the base64 text borg keeps in the repository config (line breaks allowed).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        Self::from_msgpack(&super::key_export::decode_base64(text)?)
    }

    /// The base64 text as borg writes it: standard alphabet, wrapped at 70 columns, no final newline.
    pub fn to_text(&self) -> String {
        super::key_export::wrap_base64(&self.to_msgpack())
    }
}

const KEYFILE_HEADER: &str = "BORG_KEY ";

/// A keyfile: `BORG_KEY <repository id hex>` on the first line, the key text below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyfile {
    pub repository_id: [u8; 32],
    pub key: EncryptedKey,
}

impl Keyfile {
    pub fn parse(content: &str) -> Result<Self, KeyError> {
        let (first, rest) = content.split_once('\n').unwrap_or((content, ""));
        let id_hex = first
            .trim_end()
            .strip_prefix(KEYFILE_HEADER)
            .ok_or_else(|| corrupt("not a borg key file (no BORG_KEY header)"))?;
        let repository_id = parse_hex32(id_hex.trim())
            .ok_or_else(|| corrupt("the BORG_KEY header has no valid repository id"))?;
        Ok(Keyfile {
            repository_id,
            key: EncryptedKey::from_text(rest)?,
        })
    }

    pub fn render(&self) -> String {
        super::key_export::keyfile_text(&self.repository_id, &self.key.to_text())
    }

    /// Refuses a key file made for another repository, as borg's `find_key` does.
    pub fn check_repository(&self, repository_id: &[u8; 32]) -> Result<(), KeyError> {
        if &self.repository_id == repository_id {
            Ok(())
        } else {
            Err(KeyError::WrongRepository {
                expected: hex(repository_id),
                found: hex(&self.repository_id),
            })
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    parse_hex(text)?.try_into().ok()
}

/// The bytes of an even number of hex digits.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(key_type: KeyType) -> KeyMaterial {
        let random: [u8; 100] = std::array::from_fn(|i| i as u8);
        let blake: [u8; 128] = std::array::from_fn(|i| (i as u8).wrapping_mul(3));
        KeyMaterial::from_random(key_type, &random, &blake, [9u8; 32])
    }

    #[test]
    fn seal_then_open_round_trips_and_wrong_passphrase_is_named() {
        for key_type in [KeyType::Repokey, KeyType::Blake2Keyfile] {
            let m = material(key_type);
            // Few iterations keep the unit test fast; real blobs use PBKDF2_ITERATIONS.
            let sealed = EncryptedKey::seal(&m, b"secret", [5u8; 32], 10);
            let reparsed = EncryptedKey::from_text(&sealed.to_text()).unwrap();
            assert_eq!(reparsed, sealed);
            assert_eq!(reparsed.open(b"secret").unwrap(), m);
            assert_eq!(reparsed.open(b"Secret"), Err(KeyError::WrongPassphrase));
        }
    }

    #[test]
    fn seed_split_is_signed_big_endian() {
        let m = material(KeyType::Repokey);
        assert_eq!(m.chunk_seed, i32::from_be_bytes([96, 97, 98, 99]));
        assert_eq!(m.enc_hmac_key.len(), 32);
        let b = material(KeyType::Blake2Repokey);
        assert_eq!(b.id_key.len(), 128);
        assert!(b.id_key[64..].iter().all(|&x| x == 0));
    }

    #[test]
    fn corrupt_blobs_are_not_wrong_passphrases() {
        assert!(matches!(
            EncryptedKey::from_text("!!!"),
            Err(KeyError::Corrupt(_))
        ));
        assert!(matches!(
            EncryptedKey::from_text(""),
            Err(KeyError::Corrupt(_))
        ));
        let mut blob = EncryptedKey::seal(&material(KeyType::Repokey), b"x", [1; 32], 1);
        blob.hash.truncate(5);
        let text = blob.to_text();
        assert!(matches!(
            EncryptedKey::from_text(&text),
            Err(KeyError::Corrupt(_))
        ));
    }

    #[test]
    fn key_type_from_manifest_byte() {
        assert_eq!(KeyType::identify(&[0x05, 1, 2]), Ok(KeyType::Blake2Repokey));
        assert_eq!(KeyType::identify(&[0x01]), Ok(KeyType::Repokey));
        assert_eq!(
            KeyType::identify(&[0x09]),
            Err(KeyError::UnknownKeyType(0x09))
        );
        assert_eq!(KeyType::identify(&[]), Err(KeyError::EmptyManifest));
        assert!(KeyError::UnknownKeyType(0x09).to_string().contains("0x09"));
    }

    #[test]
    fn keyfile_round_trip_and_repository_check() {
        let key = EncryptedKey::seal(&material(KeyType::Keyfile), b"p", [2; 32], 1);
        let kf = Keyfile {
            repository_id: [0xab; 32],
            key,
        };
        let parsed = Keyfile::parse(&kf.render()).unwrap();
        assert_eq!(parsed, kf);
        assert!(parsed.check_repository(&[0xab; 32]).is_ok());
        assert!(matches!(
            parsed.check_repository(&[0; 32]),
            Err(KeyError::WrongRepository { .. })
        ));
    }
}
