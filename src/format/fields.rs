//! Typed access to the fields of borg's msgpack dicts, shared by the item, archive and manifest
//! models. Each decoder takes the dict apart key by key, so a wrong type names the field it is in,
//! and keys the model does not know are kept, in order, to be written back unchanged.

use super::envelope::ObjectId;
use super::msgpack::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {object}: {problem}")]
pub struct InvalidObject {
    pub object: &'static str,
    pub problem: String,
}

/// The entries of a borg dict, consumed field by field.
pub struct Fields {
    object: &'static str,
    entries: Vec<(Vec<u8>, Value)>,
}

impl Fields {
    pub fn new(object: &'static str, value: Value) -> Result<Self, InvalidObject> {
        let Value::Map(map) = value else {
            return Err(InvalidObject {
                object,
                problem: "not a map".into(),
            });
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            match k {
                Value::Raw(key) => entries.push((key, v)),
                other => {
                    return Err(InvalidObject {
                        object,
                        problem: format!("key {} is not a string", other.brief()),
                    });
                }
            }
        }
        Ok(Fields { object, entries })
    }

    pub fn error(&self, problem: impl Into<String>) -> InvalidObject {
        InvalidObject {
            object: self.object,
            problem: problem.into(),
        }
    }

    fn wrong(&self, key: &str, expected: &str) -> InvalidObject {
        self.error(format!("field {key} is not {expected}"))
    }

    /// Removes and returns the raw value of `key`.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        let pos = self.entries.iter().position(|(k, _)| k == key.as_bytes())?;
        Some(self.entries.remove(pos).1)
    }

    pub fn bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Raw(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// A string field that may be present but nil (borg's `user`/`group` when the name is unknown).
    pub fn nullable_bytes(&mut self, key: &str) -> Result<Option<Option<Vec<u8>>>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Nil) => Ok(Some(None)),
            Some(Value::Raw(b)) => Ok(Some(Some(b))),
            Some(_) => Err(self.wrong(key, "a string or nil")),
        }
    }

    pub fn int<T: TryFrom<i128>>(&mut self, key: &str) -> Result<Option<T>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Int(i)) => T::try_from(i)
                .map(Some)
                .map_err(|_| self.error(format!("field {key} is out of range ({i})"))),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(key, "a boolean")),
        }
    }

    /// A nanosecond timestamp: an integer, or the little-endian signed bytes borg writes for
    /// values beyond 63 bits (`int_to_bigint`); clamped into i64.
    pub fn timestamp(&mut self, key: &str) -> Result<Option<i64>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(clamp_i64(i))),
            Some(Value::Raw(b)) if !b.is_empty() && b.len() <= 16 => {
                let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
                let mut le = [fill; 16];
                le[..b.len()].copy_from_slice(&b);
                Ok(Some(clamp_i64(i128::from_le_bytes(le))))
            }
            Some(_) => Err(self.wrong(key, "a timestamp")),
        }
    }

    pub fn id(&mut self, key: &str) -> Result<Option<ObjectId>, InvalidObject> {
        match self.bytes(key)? {
            None => Ok(None),
            Some(b) => b
                .try_into()
                .map(Some)
                .map_err(|_| self.wrong(key, "a 32-byte id")),
        }
    }

    pub fn array(&mut self, key: &str) -> Result<Option<Vec<Value>>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong(key, "an array")),
        }
    }

    pub fn map(&mut self, key: &str) -> Result<Option<Vec<(Value, Value)>>, InvalidObject> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Map(m)) => Ok(Some(m)),
            Some(_) => Err(self.wrong(key, "a map")),
        }
    }

    pub fn require<T>(&self, key: &str, value: Option<T>) -> Result<T, InvalidObject> {
        value.ok_or_else(|| self.error(format!("required field {key} is missing")))
    }

    /// The keys nobody took: kept so that writing the object back loses nothing.
    pub fn rest(self) -> Vec<(Vec<u8>, Value)> {
        self.entries
    }
}

fn clamp_i64(i: i128) -> i64 {
    i.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Collects the entries of a dict to be written; `finish` sorts them like borg's `StableDict`.
#[derive(Default)]
pub struct DictWriter {
    entries: Vec<(Vec<u8>, Value)>,
}

impl DictWriter {
    pub fn put(&mut self, key: &str, value: Value) {
        self.entries.push((key.as_bytes().to_vec(), value));
    }

    pub fn put_opt(&mut self, key: &str, value: Option<Value>) {
        if let Some(v) = value {
            self.put(key, v);
        }
    }

    pub fn extend(&mut self, extra: &[(Vec<u8>, Value)]) {
        self.entries.extend(extra.iter().cloned());
    }

    pub fn into_entries(self) -> Vec<(Vec<u8>, Value)> {
        self.entries
    }

    pub fn finish(self) -> Value {
        Value::sorted_map(self.entries)
    }
}

pub fn int(i: impl Into<i128>) -> Value {
    Value::Int(i.into())
}
