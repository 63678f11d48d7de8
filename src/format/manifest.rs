//! The manifest: the repository's table of archives, stored under id 0
//! (`docs/borg-format.md` §6.2).
//!
//! It is the one object whose id says nothing about its contents, so it is only trusted with a
//! valid TAM: [`Manifest::unpack`] refuses it without one (borg ≥ 1.2.5 policy). Its `config` and any
//! extra `item_keys` are preserved as read, because borg relies on both, and its timestamp must grow
//! strictly with every write (borg detects rollbacks by comparing it as a string).

use super::envelope::{ObjectId, ObjectKey};
use super::fields::{DictWriter, Fields, InvalidObject, int};
use super::item::ITEM_KEYS;
use super::msgpack::Value;
use super::tam::{self, TamContext, TamError, TamStatus};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRef {
    pub id: ObjectId,
    /// The archive's start time as stored (`%Y-%m-%dT%H:%M:%S.%f`).
    pub time: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub version: i64,
    /// Archive name → reference, sorted by name (borg writes them sorted).
    pub archives: Vec<(Vec<u8>, ArchiveRef)>,
    /// The `config` dict, kept whole: `tam_required`, `feature_flags` and anything newer.
    pub config: Vec<(Value, Value)>,
    pub item_keys: Vec<Vec<u8>>,
    pub timestamp: Vec<u8>,
    pub extra: Vec<(Vec<u8>, Value)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error(transparent)]
    Tam(#[from] TamError),
    #[error(
        "the manifest has no authentication (TAM); refusing it, as borg does since 1.2.5 (see borg's CVE-2023-36811 upgrade notes)"
    )]
    TamMissing,
    #[error(transparent)]
    Invalid(#[from] InvalidObject),
    #[error("unsupported manifest version {0}")]
    UnsupportedVersion(i64),
    #[error(
        "the repository requires features this client does not know for {operation}: {features}; use a newer client"
    )]
    UnsupportedFeatures { operation: String, features: String },
}

/// What a command is about to do, for the manifest's mandatory feature flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    Check,
    Write,
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Check => "check",
            Operation::Write => "write",
            Operation::Delete => "delete",
        }
    }
}

impl Manifest {
    /// A manifest for a new repository; `tam_required` goes into config for keyed repositories,
    /// as borg 1.4 writes it.
    pub fn new(keyed: bool, timestamp: Vec<u8>) -> Manifest {
        Manifest {
            version: 1,
            archives: Vec::new(),
            config: if keyed {
                vec![(Value::raw("tam_required"), Value::Bool(true))]
            } else {
                Vec::new()
            },
            item_keys: ITEM_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect(),
            timestamp,
            extra: Vec::new(),
        }
    }

    /// Verifies the TAM (required) and decodes the plaintext of the manifest object.
    pub fn unpack(key: &ObjectKey, plaintext: &[u8]) -> Result<Manifest, ManifestError> {
        match tam::unpack_verified(key, plaintext, TamContext::Manifest)? {
            (_, TamStatus::Missing) => Err(ManifestError::TamMissing),
            (dict, TamStatus::Verified) => Self::from_value(dict),
        }
    }

    pub fn from_value(value: Value) -> Result<Manifest, ManifestError> {
        let mut f = Fields::new("manifest", value)?;
        let version = f.int::<i64>("version")?;
        let version = f.require("version", version)?;
        if version != 1 && version != 2 {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let mut archives = Vec::new();
        for (name, entry) in f.map("archives")?.unwrap_or_default() {
            let name = name
                .as_raw()
                .ok_or_else(|| f.error("archive names must be strings"))?
                .to_vec();
            let mut e = Fields::new("manifest archive entry", entry)?;
            let id = e.id("id")?;
            let time = e.bytes("time")?;
            archives.push((
                name,
                ArchiveRef {
                    id: e.require("id", id)?,
                    time: e.require("time", time)?,
                },
            ));
        }
        archives.sort_by(|a, b| a.0.cmp(&b.0));
        let item_keys = f
            .array("item_keys")?
            .unwrap_or_default()
            .iter()
            .map(|k| k.as_raw().map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.error("item_keys must be strings"))?;
        let timestamp = f.bytes("timestamp")?;
        Ok(Manifest {
            version,
            archives,
            config: f.map("config")?.unwrap_or_default(),
            item_keys,
            timestamp: f.require("timestamp", timestamp)?,
            extra: f.rest(),
        })
    }

    fn entries(&self) -> Vec<(Vec<u8>, Value)> {
        let mut d = DictWriter::default();
        d.put("version", int(self.version));
        d.put(
            "archives",
            Value::sorted_map(self.archives.iter().map(|(name, a)| {
                (
                    name.clone(),
                    Value::sorted_map([
                        ("id", Value::raw(a.id.to_vec())),
                        ("time", Value::raw(a.time.clone())),
                    ]),
                )
            })),
        );
        let mut config = self.config.clone();
        config.sort_by(|a, b| a.0.as_raw().cmp(&b.0.as_raw()));
        d.put("config", Value::Map(config));
        let mut item_keys = self.item_keys.clone();
        item_keys.sort();
        item_keys.dedup();
        d.put(
            "item_keys",
            Value::Array(item_keys.into_iter().map(Value::Raw).collect()),
        );
        d.put("timestamp", Value::raw(self.timestamp.clone()));
        d.extend(&self.extra);
        d.into_entries()
    }

    /// Packs with a fresh TAM (`salt`: 64 random bytes).
    pub fn pack(&self, key: &ObjectKey, salt: [u8; 64]) -> Vec<u8> {
        tam::pack_authenticated(key, self.entries(), TamContext::Manifest, salt)
    }

    pub fn archive(&self, name: &[u8]) -> Option<&ArchiveRef> {
        self.archives
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// `config.tam_required`, if the manifest says.
    pub fn tam_required(&self) -> Option<bool> {
        self.config
            .iter()
            .find(|(k, _)| k.as_raw() == Some(b"tam_required"))
            .and_then(|(_, v)| v.as_bool())
    }

    /// Refuses an operation for which the repository lists mandatory features. Borg 1.x knows no
    /// features, so any listed one means a newer client wrote this repository.
    pub fn check_features(&self, operation: Operation) -> Result<(), ManifestError> {
        let flags = self
            .config
            .iter()
            .find(|(k, _)| k.as_raw() == Some(b"feature_flags"))
            .map(|(_, v)| v);
        let mandatory: Vec<String> = flags
            .and_then(|f| f.get(operation.name()))
            .and_then(|o| o.get("mandatory"))
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .map(|f| String::from_utf8_lossy(f.as_raw().unwrap_or(b"?")).into_owned())
            .collect();
        if mandatory.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::UnsupportedFeatures {
                operation: operation.name().into(),
                features: mandatory.join(", "),
            })
        }
    }
}

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// Formats microseconds since the Unix epoch as borg's `ISO_FORMAT`, `%Y-%m-%dT%H:%M:%S.%f`
/// (naive UTC, always six fractional digits).
pub fn format_timestamp(unix_micros: i64) -> String {
    let days = unix_micros.div_euclid(DAY_MICROS);
    let of_day = unix_micros.rem_euclid(DAY_MICROS);
    let (year, month, day) = civil_from_days(days);
    let seconds = of_day / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        of_day % 1_000_000
    )
}

/// Parses `%Y-%m-%dT%H:%M:%S[.%f]` (as borg writes and reads it) into microseconds since the epoch.
pub fn parse_timestamp(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || fraction.len() > 6
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").parse().ok()?;
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + micros)
}

/// The timestamp for a manifest written now: strictly later than the previous one, because borg
/// takes a timestamp that does not grow for a rollback attack (it writes `max(prev + 1 µs, now)`).
pub fn next_timestamp(previous: Option<&[u8]>, now_unix_micros: i64) -> String {
    let floor = previous
        .and_then(parse_timestamp)
        .map_or(i64::MIN, |p| p + 1);
    format_timestamp(now_unix_micros.max(floor))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based computation).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::envelope::tests::vector_key;
    use crate::format::key::KeyType;

    #[test]
    fn round_trip_keeps_config_and_refuses_missing_tam() {
        let key = vector_key(KeyType::Repokey);
        let mut m = Manifest::new(true, b"2026-11-28T20:09:59.186788".to_vec());
        m.archives.push((
            b"a1".to_vec(),
            ArchiveRef {
                id: [4; 32],
                time: b"2026-11-28T20:09:59.067426".to_vec(),
            },
        ));
        m.config.push((Value::raw("zz_future"), Value::Int(1)));
        m.item_keys.push(b"hlid".to_vec());
        let packed = m.pack(&key, [1; 64]);
        let back = Manifest::unpack(&key, &packed).unwrap();
        assert_eq!(back.tam_required(), Some(true));
        assert_eq!(back.archive(b"a1").unwrap().id, [4; 32]);
        assert!(
            back.config
                .iter()
                .any(|(k, _)| k.as_raw() == Some(b"zz_future"))
        );
        assert_eq!(back.item_keys.len(), 24);
        let untagged = Value::sorted_map(m.entries()).to_bytes();
        assert_eq!(
            Manifest::unpack(&key, &untagged),
            Err(ManifestError::TamMissing)
        );
    }

    #[test]
    fn timestamps_match_pythons_and_always_grow() {
        // Values from Python's datetime for the same instants.
        for (text, micros) in [
            ("2026-11-28T20:09:59.186788", 1_795_896_599_186_788),
            ("1970-01-01T00:00:00.000000", 0),
            ("2000-02-29T23:59:59.999999", 951_868_799_999_999),
            ("2038-01-19T03:14:08.000001", 2_147_483_648_000_001),
        ] {
            assert_eq!(format_timestamp(micros), text);
            assert_eq!(parse_timestamp(text.as_bytes()), Some(micros));
        }
        assert_eq!(
            parse_timestamp(b"2026-11-28T20:09:59"),
            Some(1_795_896_599_000_000)
        );
        assert_eq!(parse_timestamp(b"2026-13-28T20:09:59"), None);
        assert_eq!(parse_timestamp(b"yesterday"), None);
        let prev = b"2026-11-28T20:09:59.186788";
        assert_eq!(next_timestamp(Some(prev), 0), "2026-11-28T20:09:59.186789");
        assert_eq!(
            next_timestamp(Some(prev), 1_795_896_600_000_000),
            "2026-11-28T20:10:00.000000"
        );
        assert_eq!(next_timestamp(None, 5), "1970-01-01T00:00:00.000005");
    }

    #[test]
    fn mandatory_features_are_refused() {
        let mut m = Manifest::new(false, b"t".to_vec());
        m.config.push((
            Value::raw("feature_flags"),
            Value::sorted_map([(
                "write",
                Value::sorted_map([("mandatory", Value::Array(vec![Value::raw("magic")]))]),
            )]),
        ));
        assert!(m.check_features(Operation::Read).is_ok());
        let err = m.check_features(Operation::Write).unwrap_err();
        assert!(err.to_string().contains("magic"));
    }
}
