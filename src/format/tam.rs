//! TAM, borg's tertiary authentication for metadata (`docs/borg-format.md` §7).
//!
//! The manifest has no content-derived id (it always lives at id 0), so in unencrypted and
//! authenticated modes nothing but this HMAC stops a forged manifest, and since borg 1.2.5 the
//! same holds for archives (CVE-2023-36811). The HMAC-SHA512 covers the whole packed dict with
//! its own `tam.hmac` field set to 64 zero bytes; the key is derived per object with HKDF from the
//! repository key and a random 64-byte salt stored next to the HMAC.
//!
//! Verification does not re-pack: it zeroes the first occurrence of the HMAC bytes inside the raw
//! data and recomputes, so any consistent encoding verifies, exactly as borg does it.

use hmac::{KeyInit, Mac};
use sha2::Sha512;

use super::envelope::ObjectKey;
use super::msgpack::{self, Value};

type HmacSha512 = hmac::Hmac<Sha512>;

const SUITE: &str = "HKDF_HMAC_SHA512";

/// What an authenticated object is; part of the derived key, so a TAM cannot be moved between kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamContext {
    Manifest,
    Archive,
}

impl TamContext {
    fn name(self) -> &'static str {
        match self {
            TamContext::Manifest => "manifest",
            TamContext::Archive => "archive",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamStatus {
    Verified,
    /// The object has no TAM at all. Callers decide whether that is acceptable
    /// (`docs/borg-format.md` §7, "Policy").
    Missing,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TamError {
    #[error("the {0} is not valid msgpack: {1}")]
    Malformed(&'static str, msgpack::DecodeError),
    #[error("the {0} is not a map")]
    NotAMap(&'static str),
    #[error("the {0}'s TAM is malformed")]
    MalformedTam(&'static str),
    #[error("the {0}'s TAM uses the unsupported suite {1:?}")]
    UnsupportedSuite(&'static str, String),
    #[error(
        "the {0}'s authentication (TAM) is invalid: it was modified or forged, or the key does not belong to this repository"
    )]
    Invalid(&'static str),
}

/// The per-object HMAC key (RFC 5869 HKDF-HMAC-SHA512 for keyed types).
pub fn tam_key(key: &ObjectKey, salt: &[u8], context: TamContext) -> Vec<u8> {
    match key.material() {
        None => [salt, context.name().as_bytes()].concat(),
        Some(m) => {
            let ikm = [&m.id_key[..], &m.enc_key[..], &m.enc_hmac_key[..]].concat();
            let info = [
                b"borg-metadata-authentication-".as_slice(),
                context.name().as_bytes(),
            ]
            .concat();
            let mut okm = vec![0u8; 64];
            hkdf::Hkdf::<Sha512>::new(Some(salt), &ikm)
                .expand(&info, &mut okm)
                .expect("64 bytes is a valid HKDF-SHA512 length");
            okm
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha512 {
    let mut mac = <HmacSha512 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac
}

/// Packs the map `entries` (sorted, plus a `tam` entry) and authenticates it.
/// `salt` must be 64 fresh random bytes.
pub fn pack_authenticated(
    key: &ObjectKey,
    mut entries: Vec<(Vec<u8>, Value)>,
    context: TamContext,
    salt: [u8; 64],
) -> Vec<u8> {
    entries.retain(|(k, _)| k != b"tam");
    let tam = Value::sorted_map([
        ("hmac", Value::raw(vec![0u8; 64])),
        ("salt", Value::raw(salt.to_vec())),
        ("type", Value::raw(SUITE)),
    ]);
    entries.push((b"tam".to_vec(), tam));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // Pack entry by entry to learn where the placeholder lands, rather than searching for it:
    // user data (a comment, say) could contain the same bytes.
    let mut packed = Vec::new();
    super::msgpack::encode_map_len(entries.len(), &mut packed);
    let mut slot = 0;
    for (k, v) in &entries {
        Value::raw(k.clone()).encode(&mut packed);
        if k == b"tam" {
            // `tam` packs as: map header, "hmac", `da 00 40`, then the 64 placeholder bytes.
            slot = packed.len() + 1 + 5 + 3;
        }
        v.encode(&mut packed);
    }
    let tag = hmac(&tam_key(key, &salt, context), &packed)
        .finalize()
        .into_bytes();
    packed[slot..slot + 64].copy_from_slice(&tag);
    packed
}

/// Unpacks an authenticated dict and verifies its TAM. Returns the dict without the `tam` entry.
pub fn unpack_verified(
    key: &ObjectKey,
    data: &[u8],
    context: TamContext,
) -> Result<(Value, TamStatus), TamError> {
    let what = context.name();
    let value = msgpack::decode(data).map_err(|e| TamError::Malformed(what, e))?;
    let Value::Map(mut entries) = value else {
        return Err(TamError::NotAMap(what));
    };
    let Some(pos) = entries.iter().position(|(k, _)| k.as_raw() == Some(b"tam")) else {
        return Ok((Value::Map(entries), TamStatus::Missing));
    };
    let (_, tam) = entries.remove(pos);
    let field = |name: &str| tam.get(name).and_then(Value::as_raw);
    let suite = field("type").ok_or(TamError::MalformedTam(what))?;
    if suite != SUITE.as_bytes() {
        return Err(TamError::UnsupportedSuite(
            what,
            String::from_utf8_lossy(suite).into_owned(),
        ));
    }
    let (Some(tag), Some(salt)) = (field("hmac"), field("salt")) else {
        return Err(TamError::MalformedTam(what));
    };
    if tag.len() != 64 {
        return Err(TamError::MalformedTam(what));
    }
    let at = data
        .windows(64)
        .position(|w| w == tag)
        .ok_or(TamError::MalformedTam(what))?;
    let mut zeroed = data.to_vec();
    zeroed[at..at + 64].fill(0);
    hmac(&tam_key(key, salt, context), &zeroed)
        .verify_slice(tag)
        .map_err(|_| TamError::Invalid(what))?;
    Ok((Value::Map(entries), TamStatus::Verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::envelope::tests::vector_key;
    use crate::format::key::{KeyType, hex};

    #[test]
    fn spec_vector_tam_key_and_archive_packing() {
        let key = vector_key(KeyType::Repokey);
        assert_eq!(
            hex(&tam_key(&key, &[0u8; 64], TamContext::Manifest)),
            "1602cb7a7627e552c882c7c9beae19fa192856f2e62651bdf5a3d4fb8914a528\
             f97da471482439fe354a0a3e339d719cb957e3a37ef77f6f1218feed751e5c17"
        );
        let packed = pack_authenticated(
            &key,
            vec![
                (b"version".to_vec(), Value::Int(1)),
                (b"name".to_vec(), Value::raw("x")),
            ],
            TamContext::Archive,
            [0u8; 64],
        );
        let expected = format!(
            "83a46e616d65a178a374616d83a4686d6163da0040\
             85fc6613b33eb9c203026d860a080bc50ef36ad00ee97c932f1977971e92b501\
             74b6b4fa3518e298646a9b599cf02bde13693eaf632f44f8b5ce17c0762277\
             36a473616c74da0040{}a474797065b0484b44465f484d41435f534841353132a776657273696f6e01",
            "00".repeat(64)
        );
        assert_eq!(hex(&packed), expected);
        let (dict, status) = unpack_verified(&key, &packed, TamContext::Archive).unwrap();
        assert_eq!(status, TamStatus::Verified);
        assert!(dict.get("tam").is_none());
        // The same bytes are not a valid manifest: the context is part of the key.
        assert_eq!(
            unpack_verified(&key, &packed, TamContext::Manifest),
            Err(TamError::Invalid("manifest"))
        );
    }

    #[test]
    fn tampering_missing_and_foreign_suites() {
        let key = vector_key(KeyType::Blake2Repokey);
        let packed = pack_authenticated(
            &key,
            vec![(b"name".to_vec(), Value::raw("abc"))],
            TamContext::Archive,
            [3u8; 64],
        );
        let mut tampered = packed.clone();
        let at = tampered.windows(3).position(|w| w == b"abc").unwrap();
        tampered[at] = b'x';
        assert_eq!(
            unpack_verified(&key, &tampered, TamContext::Archive),
            Err(TamError::Invalid("archive"))
        );
        let plain = Value::sorted_map([("name", Value::raw("abc"))]).to_bytes();
        assert_eq!(
            unpack_verified(&key, &plain, TamContext::Archive)
                .unwrap()
                .1,
            TamStatus::Missing
        );
        let odd = Value::sorted_map([("tam", Value::sorted_map([("type", Value::raw("FOO"))]))])
            .to_bytes();
        assert!(matches!(
            unpack_verified(&key, &odd, TamContext::Manifest),
            Err(TamError::UnsupportedSuite(..))
        ));
    }
}
