//! The msgpack dialect borg 1.x speaks.
//!
//! Borg packs with msgpack-python's `use_bin_type=False`, the *old* spec: every byte string and
//! every text string is a "raw" (fixstr / raw16 `0xda` / raw32 `0xdb`), never `str8` and never
//! `bin`. Borg's cache synchroniser is a strict C parser that rejects `bin` inside item streams, so
//! a writer that follows serde's defaults produces archives that break the next `borg create`
//! (`docs/borg-format.md` §0.1, §11). That is why this is a small hand-written codec instead of
//! rmp-serde: the encoder emits exactly the bytes msgpack-python would, and the decoder is tolerant
//! in the way borg's (`raw=True`) is: `str8`, `bin` and raw all decode to [`Value::Raw`].
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

/// How much of a value [`Value::brief`] shows.
pub const BRIEF_CHARS: usize = 200;

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
    #[error("msgpack object of more than {0} elements")]
    TooManyElements(usize),
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

    /// The value as `Display` shows it, cut after [`BRIEF_CHARS`] characters: for messages
    /// about values a peer sent, which may be of any size (a server's answer of a million
    /// elements must not become a line of megabytes).
    pub fn brief(&self) -> String {
        struct Budget(String);
        impl fmt::Write for Budget {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if self.0.len() >= BRIEF_CHARS {
                        return Err(fmt::Error);
                    }
                    self.0.push(c);
                }
                Ok(())
            }
        }
        let mut shown = Budget(String::new());
        if fmt::write(&mut shown, format_args!("{self}")).is_err() {
            shown.0.push('…');
        }
        shown.0
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

    /// The next element's header, consumed; a raw's bytes with it.
    fn next_head(&mut self) -> Result<Head, DecodeError> {
        let (len, head) = read_head(&self.data[self.pos..])?;
        self.pos += len;
        Ok(head)
    }

    /// A map's length, or `None` when the element (then skipped) is not a map.
    pub fn map_len(&mut self) -> Result<Option<usize>, DecodeError> {
        match self.next_head()? {
            Head::Map(n) => Ok(Some(n)),
            other => self.skip_rest(other, 0).map(|()| None),
        }
    }

    /// An array's length, or `None` when the element (then skipped) is not an array.
    pub fn array_len(&mut self) -> Result<Option<usize>, DecodeError> {
        match self.next_head()? {
            Head::Array(n) => Ok(Some(n)),
            other => self.skip_rest(other, 0).map(|()| None),
        }
    }

    /// A raw's bytes, borrowed, or `None` when the element (then skipped) is not a raw.
    pub fn raw_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.next_head()? {
            Head::Raw(n) => self.take(n).map(Some),
            other => self.skip_rest(other, 0).map(|()| None),
        }
    }

    /// An integer, or `None` when the element (then skipped) is not one.
    pub fn int(&mut self) -> Result<Option<i128>, DecodeError> {
        match self.next_head()? {
            Head::Scalar(Value::Int(i)) => Ok(Some(i)),
            other => self.skip_rest(other, 0).map(|()| None),
        }
    }

    /// Passes over the next element without building it.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        let head = self.next_head()?;
        self.skip_rest(head, 0)
    }

    /// Passes over what follows the header `head`.
    fn skip_rest(&mut self, head: Head, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let elements = match head {
            Head::Scalar(_) => 0,
            Head::Raw(n) => return self.take(n).map(|_| ()),
            Head::Array(n) => n,
            Head::Map(n) => 2 * n,
        };
        for _ in 0..elements {
            let head = self.next_head()?;
            self.skip_rest(head, depth + 1)?;
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Incomplete);
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(match self.next_head()? {
            Head::Scalar(value) => value,
            Head::Raw(n) => self.raw(n)?,
            Head::Array(n) => self.array(n, depth)?,
            Head::Map(n) => self.map(n, depth)?,
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
/// split into chunks at arbitrary byte offsets, even inside an item (`docs/borg-format.md` §6.4),
/// and RPC answers arrive in whatever pieces the connection delivers.
///
/// An incomplete value is never parsed again from its start: a [`Framer`] remembers how far it
/// has looked and what is still open, so each byte's header is looked at once, and a value is
/// decoded in one pass when its last byte is there. (Re-parsing the buffer on every piece made a
/// server's answer of many small elements, sent a few bytes at a time, cost quadratic time.)
#[derive(Default)]
pub struct StreamDecoder {
    buffer: Vec<u8>,
    framer: Framer,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses a value of more than `limit` elements (every scalar, raw and
    /// container counts one) before building it. A decoded element takes 32 to 64 bytes of
    /// memory for one byte of input, so where the peer is not trusted and no answer can be that
    /// large, this keeps a small stream from turning into gigabytes.
    pub fn with_element_limit(limit: usize) -> Self {
        StreamDecoder {
            buffer: Vec::new(),
            framer: Framer {
                element_limit: Some(limit),
                ..Framer::default()
            },
        }
    }

    /// Appends `data` and returns every value that is now complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Value>, DecodeError> {
        let mut values = Vec::new();
        // The framer found each value's end, so it decodes whole.
        self.feed_encoded(data, |encoded| {
            values.push(decode(encoded)?);
            Ok::<_, DecodeError>(())
        })?;
        Ok(values)
    }

    /// Appends `data` and shows `each` every value that is now complete, still encoded: for a
    /// reader that wants a few fields of each and should not pay for building the rest.
    pub fn feed_encoded<E: From<DecodeError>>(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buffer.extend_from_slice(data);
        let mut start = 0;
        let mut result = Ok(());
        loop {
            match self.framer.scan(&self.buffer, start) {
                Ok(Some(end)) => {
                    if let Err(e) = each(&self.buffer[start..end]) {
                        result = Err(e);
                        break;
                    }
                    start = end;
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        self.buffer.drain(..start);
        self.framer.shift(start);
        result
    }

    /// Bytes held back because they do not form a complete value yet — or, where the pending
    /// value's header already says how long it is, the bytes it will need: an answer declared
    /// larger than a limit can be refused before it arrives.
    pub fn buffered(&self) -> usize {
        self.buffer.len().max(self.framer.pos)
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

/// Finds where the values of a stream end without building them: the state of the one value in
/// progress, kept between pieces of the stream.
#[derive(Default)]
struct Framer {
    /// Where the next header starts, relative to the buffer; past its end while the body of a
    /// raw is still to come.
    pos: usize,
    /// For each open container, how many elements (keys and values counted apart) it still needs.
    open: Vec<u64>,
    /// Elements of the value in progress seen so far, and how many it may have.
    elements: usize,
    element_limit: Option<usize>,
    /// Complete headers looked at, for the test that each is looked at once.
    #[cfg(test)]
    headers_seen: usize,
}

impl Framer {
    /// Looks further into `buffer`, where the value in progress starts at `start`; its end, once
    /// it is complete (the state is then ready for the next value).
    fn scan(&mut self, buffer: &[u8], start: usize) -> Result<Option<usize>, DecodeError> {
        self.pos = self.pos.max(start);
        loop {
            // Every header of the value seen, none left open: it is complete once its last
            // raw's body is there too.
            if self.open.is_empty() && self.elements > 0 {
                if self.pos > buffer.len() {
                    return Ok(None);
                }
                self.elements = 0;
                return Ok(Some(self.pos));
            }
            if self.pos >= buffer.len() {
                return Ok(None);
            }
            let (header, head) = match read_head(&buffer[self.pos..]) {
                Ok(read) => read,
                Err(DecodeError::Incomplete) => return Ok(None),
                Err(e) => return Err(e),
            };
            // What the element still opens (keys and values counted apart), and its body.
            let (elements, body) = match head {
                Head::Scalar(_) => (0, 0),
                Head::Raw(len) => (0, len),
                Head::Array(n) => (n as u64, 0),
                Head::Map(n) => (2 * n as u64, 0),
            };
            #[cfg(test)]
            {
                self.headers_seen += 1;
            }
            self.pos += header + body;
            self.elements += 1;
            if let Some(limit) = self.element_limit
                && self.elements > limit
            {
                return Err(DecodeError::TooManyElements(limit));
            }
            if elements > 0 {
                if self.open.len() >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                self.open.push(elements);
                continue;
            }
            // An element is complete: it completes the containers it was the last element of.
            while let Some(left) = self.open.last_mut() {
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
        }
    }

    /// `n` bytes were removed from the front of the buffer.
    fn shift(&mut self, n: usize) {
        self.pos -= n;
    }
}

/// What an element's header says: a scalar's whole value, or what follows the header.
enum Head {
    Scalar(Value),
    /// A raw of this many bytes.
    Raw(usize),
    /// An array of this many elements.
    Array(usize),
    /// A map of this many entries.
    Map(usize),
}

/// Reads the header at the start of `data`: its length and what it says. `Incomplete` while
/// the header itself is not all there. The one table of borg's markers, for the decoder and the
/// framer alike.
fn read_head(data: &[u8]) -> Result<(usize, Head), DecodeError> {
    let marker = *data.first().ok_or(DecodeError::Incomplete)?;
    let be = |n: usize| -> Result<u64, DecodeError> {
        Ok(data
            .get(1..1 + n)
            .ok_or(DecodeError::Incomplete)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    };
    let int = |n: usize, value: i128| (1 + n, Head::Scalar(Value::Int(value)));
    Ok(match marker {
        0x00..=0x7f => (1, Head::Scalar(Value::Int(marker as i128))),
        0x80..=0x8f => (1, Head::Map((marker & 0x0f) as usize)),
        0x90..=0x9f => (1, Head::Array((marker & 0x0f) as usize)),
        0xa0..=0xbf => (1, Head::Raw((marker & 0x1f) as usize)),
        0xc0 => (1, Head::Scalar(Value::Nil)),
        0xc2 => (1, Head::Scalar(Value::Bool(false))),
        0xc3 => (1, Head::Scalar(Value::Bool(true))),
        0xc4 | 0xd9 => (2, Head::Raw(be(1)? as usize)),
        0xc5 | 0xda => (3, Head::Raw(be(2)? as usize)),
        0xc6 | 0xdb => (5, Head::Raw(be(4)? as usize)),
        0xca => (
            5,
            Head::Scalar(Value::Float(f32::from_bits(be(4)? as u32) as f64)),
        ),
        0xcb => (9, Head::Scalar(Value::Float(f64::from_bits(be(8)?)))),
        0xcc => int(1, be(1)? as i128),
        0xcd => int(2, be(2)? as i128),
        0xce => int(4, be(4)? as i128),
        0xcf => int(8, be(8)? as i128),
        0xd0 => int(1, be(1)? as u8 as i8 as i128),
        0xd1 => int(2, be(2)? as u16 as i16 as i128),
        0xd2 => int(4, be(4)? as u32 as i32 as i128),
        0xd3 => int(8, be(8)? as i64 as i128),
        0xdc => (3, Head::Array(be(2)? as usize)),
        0xdd => (5, Head::Array(be(4)? as usize)),
        0xde => (3, Head::Map(be(2)? as usize)),
        0xdf => (5, Head::Map(be(4)? as usize)),
        0xe0..=0xff => (1, Head::Scalar(Value::Int(marker as i8 as i128))),
        other => return Err(DecodeError::Unsupported(other)),
    })
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
        // A 32-byte chunk id is `da 00 20 <32 bytes>` in borg's streams (docs/borg-format.md §0.1).
        let bytes = Value::raw(vec![7u8; 32]).to_bytes();
        assert_eq!(&bytes[..3], &[0xda, 0x00, 0x20]);
        assert_eq!(Value::raw(vec![1u8; 31]).to_bytes()[0], 0xbf);
    }

    #[test]
    fn negotiate_prefix_matches_borg_bytes() {
        // First bytes borg 1.4.5 sends (docs/borg-format.md §1.3), built from our encoder.
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
        assert_eq!(StreamDecoder::new().feed(&deep), Err(DecodeError::TooDeep));
        assert_eq!(
            StreamDecoder::new().feed(&[0x92, 0xc1]),
            Err(DecodeError::Unsupported(0xc1))
        );
        // A raw that says it is 4 GiB is known to need that much before any of it arrives.
        let mut dec = StreamDecoder::new();
        assert_eq!(
            dec.feed(&[0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, 0]),
            Ok(vec![])
        );
        assert_eq!(dec.buffered(), 6 + 0xffff_ffff);
    }

    #[test]
    fn stream_decoder_splits_every_kind_of_value_anywhere() {
        let values = vec![
            Value::Array(vec![
                Value::Int(-1),
                Value::Int(200),
                Value::Int(-200),
                Value::Int(70_000),
                Value::Int(-70_000),
                Value::Int(1 << 40),
                Value::Int(-(1 << 40)),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Nil,
                Value::Array(vec![]),
                Value::Map(vec![]),
            ]),
            Value::raw(vec![7u8; 300]),
            Value::raw(vec![8u8; 70_000]),
            Value::Array((0..20).map(Value::Int).collect()),
            Value::Map((0..20).map(|i| (Value::Int(i), Value::Nil)).collect()),
            Value::Int(3),
        ];
        let stream: Vec<u8> = values.iter().flat_map(Value::to_bytes).collect();
        for piece in [1, 2, 3, 7, 1000, stream.len()] {
            let mut dec = StreamDecoder::new();
            let mut got = Vec::new();
            for part in stream.chunks(piece) {
                got.extend(dec.feed(part).unwrap());
            }
            dec.finish().unwrap();
            assert_eq!(got, values, "pieces of {piece}");
        }
    }

    #[test]
    fn a_brief_rendering_stops_early() {
        let huge = Value::Array(vec![Value::Nil; 1_000_000]);
        let shown = huge.brief();
        assert!(shown.starts_with("[nil, nil"));
        assert!(shown.ends_with('…'));
        assert!(shown.chars().count() <= BRIEF_CHARS + 1);
        assert_eq!(Value::Int(5).brief(), "5");
    }

    #[test]
    fn an_element_limit_refuses_a_large_value_before_building_it() {
        let mut limited = StreamDecoder::with_element_limit(10);
        let ten = Value::Array(vec![Value::Nil; 9]);
        assert_eq!(limited.feed(&ten.to_bytes()), Ok(vec![ten.clone()]));
        // The count starts again with every value.
        assert_eq!(limited.feed(&ten.to_bytes()), Ok(vec![ten]));
        let eleven = Value::Array(vec![Value::Nil; 10]).to_bytes();
        assert_eq!(
            StreamDecoder::with_element_limit(10).feed(&eleven),
            Err(DecodeError::TooManyElements(10))
        );
    }

    #[test]
    fn many_small_elements_a_byte_at_a_time_are_each_looked_at_once() {
        // Re-parsing from the start on every byte would look at 2*10^10 headers here.
        let big = Value::Array(vec![Value::Nil; 200_000]);
        let bytes = big.to_bytes();
        let mut dec = StreamDecoder::new();
        let mut got = Vec::new();
        for byte in &bytes {
            got.extend(dec.feed(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(got, vec![big]);
        assert_eq!(dec.framer.headers_seen, 200_001);
    }
}
