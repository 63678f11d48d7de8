//! The msgpack dialect borg 1.x speaks.
//!
//! Borg packs with msgpack-python's `use_bin_type=False`, the *old* spec: every byte string and every
//! text string is a "raw" (fixstr / raw16 `0xda` / raw32 `0xdb`), never `str8` and never `bin`.
//! Borg's cache synchroniser is a strict C parser that rejects `bin` inside item streams, so a writer
//! that follows serde's defaults produces archives that break the next `borg create` (spec §0.1, §11).
//! That is why this is a small hand-written codec instead of rmp-serde: the encoder emits exactly the
//! bytes msgpack-python would, and the decoder is tolerant in the way borg's (`raw=True`) is: `str8`,
//! `bin` and raw all decode to [`Value::Raw`].
//!
//! Maps keep their entries in the order given; the models sort their keys as borg's `StableDict`
//! does before packing.
//!
//! The decoder reads untrusted bytes from the network and the repository, so it never panics,
//! bounds its recursion depth and never pre-allocates more than the input could hold.

use std::fmt;

/// A decoded msgpack object.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Every msgpack integer; `i128` holds both the u64 and the i64 families.
    Int(i128),
    Float(f64),
    /// Any str-family, `str8` or `bin` object: borg treats them all as bytes.
    Raw(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// Nesting deeper than this is refused; borg's own objects nest at most 4 levels.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("msgpack data ends in the middle of an object")]
    Incomplete,
    #[error("msgpack object nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unsupported msgpack type byte 0x{0:02x}")]
    Unsupported(u8),
    #[error("{0} trailing bytes after the msgpack object")]
    TrailingBytes(usize),
}

impl Value {
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Raw(bytes.into())
    }

    /// A map whose entries are sorted by key, as borg's `StableDict` packs them.
    pub fn sorted_map<K: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        let mut entries: Vec<(Vec<u8>, Value)> =
            entries.into_iter().map(|(k, v)| (k.into(), v)).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Raw(k), v))
                .collect(),
        )
    }

    pub fn as_raw(&self) -> Option<&[u8]> {
        match self {
            Value::Raw(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks a key up in a map (keys compared as bytes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_raw() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Packs this value in borg's dialect.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Appends the old-spec encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => out.push(0xc0),
            Value::Bool(false) => out.push(0xc2),
            Value::Bool(true) => out.push(0xc3),
            Value::Int(i) => encode_int(*i, out),
            Value::Float(f) => {
                out.push(0xcb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Raw(b) => {
                encode_raw_len(b.len(), out);
                out.extend_from_slice(b);
            }
            Value::Array(items) => {
                encode_container_len(items.len(), 0x90, 0xdc, out);
                for item in items {
                    item.encode(out);
                }
            }
            Value::Map(entries) => {
                encode_container_len(entries.len(), 0x80, 0xde, out);
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }
}

/// Integers use the smallest encoding; non-negative values always the unsigned family, as
/// msgpack-python does. Values outside i64/u64 cannot be packed by borg either; they are clamped
/// here rather than producing invalid msgpack (the models never build such values).
fn encode_int(i: i128, out: &mut Vec<u8>) {
    if i >= 0 {
        let u = u64::try_from(i).unwrap_or(u64::MAX);
        if u < 128 {
            out.push(u as u8);
        } else if u <= u8::MAX as u64 {
            out.extend_from_slice(&[0xcc, u as u8]);
        } else if u <= u16::MAX as u64 {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= u32::MAX as u64 {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else {
        let s = i64::try_from(i).unwrap_or(i64::MIN);
        if s >= -32 {
            out.push(s as i8 as u8);
        } else if s >= i8::MIN as i64 {
            out.extend_from_slice(&[0xd0, s as i8 as u8]);
        } else if s >= i16::MIN as i64 {
            out.push(0xd1);
            out.extend_from_slice(&(s as i16).to_be_bytes());
        } else if s >= i32::MIN as i64 {
            out.push(0xd2);
            out.extend_from_slice(&(s as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&s.to_be_bytes());
        }
    }
}

/// Old-spec raw: fixstr up to 31 bytes, then raw16 (`0xda`), then raw32 (`0xdb`); never `str8`.
pub fn encode_raw_len(len: usize, out: &mut Vec<u8>) {
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// The header of a map with `len` entries; the entries must follow.
pub fn encode_map_len(len: usize, out: &mut Vec<u8>) {
    encode_container_len(len, 0x80, 0xde, out);
}

fn encode_container_len(len: usize, fix: u8, marker16: u8, out: &mut Vec<u8>) {
    if len < 16 {
        out.push(fix | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(marker16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(marker16 + 1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Decodes exactly one value that must span all of `data`.
pub fn decode(data: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(data);
    let value = reader.next_value()?;
    match reader.remaining() {
        0 => Ok(value),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// Reads consecutive msgpack values from a byte slice.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Bytes consumed by the values read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Reads the next value. On [`DecodeError::Incomplete`] the position is left where it was, so
    /// a streaming caller can retry once more bytes have arrived.
    pub fn next_value(&mut self) -> Result<Value, DecodeError> {
        let start = self.pos;
        let result = self.value(0);
        if result.is_err() {
            self.pos = start;
        }
        result
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Incomplete);
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::Int(marker as i128),
            0x80..=0x8f => self.map((marker & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((marker & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.raw((marker & 0x1f) as usize)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 | 0xd9 => {
                let n = self.be(1)? as usize;
                self.raw(n)?
            }
            0xc5 | 0xda => {
                let n = self.be(2)? as usize;
                self.raw(n)?
            }
            0xc6 | 0xdb => {
                let n = self.be(4)? as usize;
                self.raw(n)?
            }
            0xca => Value::Float(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc => Value::Int(self.be(1)? as i128),
            0xcd => Value::Int(self.be(2)? as i128),
            0xce => Value::Int(self.be(4)? as i128),
            0xcf => Value::Int(self.be(8)? as i128),
            0xd0 => Value::Int(self.be(1)? as u8 as i8 as i128),
            0xd1 => Value::Int(self.be(2)? as u16 as i16 as i128),
            0xd2 => Value::Int(self.be(4)? as u32 as i32 as i128),
            0xd3 => Value::Int(self.be(8)? as i64 as i128),
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.be(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(marker as i8 as i128),
            other => return Err(DecodeError::Unsupported(other)),
        })
    }

    fn raw(&mut self, n: usize) -> Result<Value, DecodeError> {
        Ok(Value::Raw(self.take(n)?.to_vec()))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        // Every element takes at least one byte: never reserve more than the input can hold.
        let mut items = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut entries = Vec::with_capacity(n.min(self.remaining() / 2));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// Feeds a msgpack stream in arbitrary pieces and yields complete values: borg's item stream is
/// split into chunks at arbitrary byte offsets, even inside an item (spec §6.4).
#[derive(Default)]
pub struct StreamDecoder {
    buffer: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data` and returns every value that is now complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Value>, DecodeError> {
        self.buffer.extend_from_slice(data);
        let mut reader = Reader::new(&self.buffer);
        let mut values = Vec::new();
        loop {
            match reader.next_value() {
                Ok(v) => values.push(v),
                Err(DecodeError::Incomplete) => break,
                Err(e) => return Err(e),
            }
        }
        let consumed = reader.position();
        self.buffer.drain(..consumed);
        Ok(values)
    }

    /// Bytes held back because they do not form a complete value yet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Call at the end of the stream: leftover bytes mean it was cut short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Incomplete)
        }
    }
}

impl fmt::Display for Value {
    /// A compact, JSON-like rendering for messages and debugging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => write!(f, "nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Raw(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
            Value::Map(entries) => {
                write!(f, "{{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_raw16_never_bin_or_str8() {
        // A 32-byte chunk id is `da 00 20 <32 bytes>` in borg's streams (spec §0.1).
        let bytes = Value::raw(vec![7u8; 32]).to_bytes();
        assert_eq!(&bytes[..3], &[0xda, 0x00, 0x20]);
        assert_eq!(Value::raw(vec![1u8; 31]).to_bytes()[0], 0xbf);
    }

    #[test]
    fn negotiate_prefix_matches_borg_bytes() {
        // First bytes borg 1.4.5 sends (spec §1.3), built from our encoder.
        let msg = Value::Array(vec![
            Value::Int(1),
            Value::Int(1),
            Value::raw("negotiate"),
            Value::Array(vec![Value::Map(vec![(
                Value::raw("client_version"),
                Value::Array(vec![
                    Value::Int(1),
                    Value::Int(4),
                    Value::Int(5),
                    Value::Int(-1),
                ]),
            )])]),
        ]);
        let expected = b"\x94\x01\x01\xa9negotiate\x91\x81\xaeclient_version\x94\x01\x04\x05\xff";
        assert_eq!(msg.to_bytes(), expected.to_vec());
    }

    #[test]
    fn integer_encodings_are_smallest() {
        let cases: &[(i128, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0xcc, 0x80]),
            (256, &[0xcd, 0x01, 0x00]),
            (65536, &[0xce, 0, 1, 0, 0]),
            (1 << 32, &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            (-1, &[0xff]),
            (-32, &[0xe0]),
            (-33, &[0xd0, 0xdf]),
            (-129, &[0xd1, 0xff, 0x7f]),
            (-1496537424, &[0xd2, 0xa6, 0xcc, 0xa6, 0xb0]),
        ];
        for (i, expected) in cases {
            assert_eq!(Value::Int(*i).to_bytes(), expected.to_vec(), "{i}");
            assert_eq!(decode(expected).unwrap(), Value::Int(*i));
        }
    }

    #[test]
    fn bin_and_str8_decode_as_raw() {
        assert_eq!(decode(&[0xc4, 2, b'h', b'i']).unwrap(), Value::raw("hi"));
        assert_eq!(decode(&[0xd9, 2, b'h', b'i']).unwrap(), Value::raw("hi"));
    }

    #[test]
    fn stream_decoder_handles_splits_inside_values() {
        let a = Value::sorted_map([("path", Value::raw("a")), ("mtime", Value::Int(5))]);
        let b = Value::sorted_map([("path", Value::raw(vec![0xffu8; 40]))]);
        let mut stream = a.to_bytes();
        stream.extend(b.to_bytes());
        for split in 0..=stream.len() {
            let mut dec = StreamDecoder::new();
            let mut got = dec.feed(&stream[..split]).unwrap();
            got.extend(dec.feed(&stream[split..]).unwrap());
            dec.finish().unwrap();
            assert_eq!(got, vec![a.clone(), b.clone()], "split at {split}");
        }
    }

    #[test]
    fn hostile_lengths_do_not_allocate_or_panic() {
        assert_eq!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(decode(&[0xc1]), Err(DecodeError::Unsupported(0xc1)));
        let deep = vec![0x91u8; 1000];
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
    }
}
