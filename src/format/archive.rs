//! The archive object and its item stream (`docs/borg-format.md` §6.3, §6.4).
//!
//! An archive object is a TAM-authenticated dict whose `items` lists the ids of item-stream chunks.
//! Concatenated, their plaintexts are one msgpack stream of item dicts, split at arbitrary offsets,
//! so [`ItemStreamDecoder`] accepts items that straddle chunk boundaries.

use super::chunker::{ChunkerParams, chunk_sizes};
use super::envelope::{ObjectId, ObjectKey};
use super::fields::{DictWriter, Fields, InvalidObject, int};
use super::item::{ChunkRef, Item, content_chunks};
use super::msgpack::{DecodeError, StreamDecoder, Value};
use super::tam::{self, TamContext, TamError, TamStatus};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchiveMeta {
    pub version: i64,
    pub name: Vec<u8>,
    /// Item-stream chunk ids, in stream order.
    pub items: Vec<ObjectId>,
    pub cmdline: Vec<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
    pub username: Option<Vec<u8>>,
    /// Start time, `%Y-%m-%dT%H:%M:%S.%f`, naive UTC.
    pub time: Vec<u8>,
    pub time_end: Option<Vec<u8>>,
    pub comment: Option<Vec<u8>>,
    /// As stored; old archives have four integers without the algorithm name.
    pub chunker_params: Option<Value>,
    pub size: Option<u64>,
    pub csize: Option<u64>,
    pub nfiles: Option<u64>,
    pub size_parts: Option<u64>,
    pub csize_parts: Option<u64>,
    pub nfiles_parts: Option<u64>,
    /// Added in borg 1.4.
    pub cwd: Option<Vec<u8>>,
    /// `recreate_*` and any other keys, kept as read.
    pub extra: Vec<(Vec<u8>, Value)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error(transparent)]
    Tam(#[from] TamError),
    #[error(transparent)]
    Invalid(#[from] InvalidObject),
    #[error("unsupported archive version {0}")]
    UnsupportedVersion(i64),
}

impl ArchiveMeta {
    /// Verifies the TAM and decodes. A missing TAM is reported, not refused: borg's list, extract
    /// and info accept such (pre-1.2.5) archives; `borg check` does not.
    pub fn unpack(
        key: &ObjectKey,
        plaintext: &[u8],
    ) -> Result<(ArchiveMeta, TamStatus), ArchiveError> {
        let (dict, status) = tam::unpack_verified(key, plaintext, TamContext::Archive)?;
        Ok((Self::from_value(dict)?, status))
    }

    pub fn from_value(value: Value) -> Result<ArchiveMeta, ArchiveError> {
        let mut f = Fields::new("archive", value)?;
        let version = f.int::<i64>("version")?;
        let version = f.require("version", version)?;
        if version != 1 {
            return Err(ArchiveError::UnsupportedVersion(version));
        }
        let name = f.bytes("name")?;
        let time = f.bytes("time")?;
        let items = f.array("items")?;
        let items = f
            .require("items", items)?
            .iter()
            .map(|v| v.as_raw().and_then(|b| <[u8; 32]>::try_from(b).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.error("items must be a list of 32-byte ids"))?;
        let cmdline = f
            .array("cmdline")?
            .unwrap_or_default()
            .iter()
            .map(|v| v.as_raw().map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.error("cmdline must be a list of strings"))?;
        Ok(ArchiveMeta {
            version,
            name: f.require("name", name)?,
            time: f.require("time", time)?,
            items,
            cmdline,
            hostname: f.bytes("hostname")?,
            username: f.bytes("username")?,
            time_end: f.bytes("time_end")?,
            comment: f.bytes("comment")?,
            chunker_params: f.take("chunker_params"),
            size: f.int("size")?,
            csize: f.int("csize")?,
            nfiles: f.int("nfiles")?,
            size_parts: f.int("size_parts")?,
            csize_parts: f.int("csize_parts")?,
            nfiles_parts: f.int("nfiles_parts")?,
            cwd: f.bytes("cwd")?,
            extra: f.rest(),
        })
    }

    fn entries(&self) -> Vec<(Vec<u8>, Value)> {
        let raw = |b: &Option<Vec<u8>>| b.as_ref().map(|b| Value::raw(b.clone()));
        let mut d = DictWriter::default();
        d.put("version", int(self.version));
        d.put("name", Value::raw(self.name.clone()));
        d.put(
            "items",
            Value::Array(
                self.items
                    .iter()
                    .map(|id| Value::raw(id.to_vec()))
                    .collect(),
            ),
        );
        d.put(
            "cmdline",
            Value::Array(self.cmdline.iter().map(|a| Value::raw(a.clone())).collect()),
        );
        d.put("time", Value::raw(self.time.clone()));
        d.put_opt("hostname", raw(&self.hostname));
        d.put_opt("username", raw(&self.username));
        d.put_opt("time_end", raw(&self.time_end));
        d.put_opt("comment", raw(&self.comment));
        d.put_opt("chunker_params", self.chunker_params.clone());
        for (key, value) in [
            ("size", self.size),
            ("csize", self.csize),
            ("nfiles", self.nfiles),
            ("size_parts", self.size_parts),
            ("csize_parts", self.csize_parts),
            ("nfiles_parts", self.nfiles_parts),
        ] {
            d.put_opt(key, value.map(int));
        }
        d.put_opt("cwd", raw(&self.cwd));
        d.extend(&self.extra);
        d.into_entries()
    }

    /// Packs with a fresh TAM (`salt`: 64 random bytes). The archive id is the id hash of the result.
    pub fn pack(&self, key: &ObjectKey, salt: [u8; 64]) -> Vec<u8> {
        tam::pack_authenticated(key, self.entries(), TamContext::Archive, salt)
    }
}

/// Turns item-stream chunk plaintexts, fed in order, into items.
#[derive(Default)]
pub struct ItemStreamDecoder {
    stream: StreamDecoder,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemStreamError {
    #[error("item stream is corrupt: {0}")]
    Msgpack(#[from] DecodeError),
    #[error(transparent)]
    Invalid(#[from] InvalidObject),
}

impl ItemStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Item>, ItemStreamError> {
        self.stream
            .feed(chunk)?
            .into_iter()
            .map(|v| Item::from_value(v).map_err(ItemStreamError::from))
            .collect()
    }

    /// Like [`feed`](Self::feed), reading only each item's content chunks ([`content_chunks`]):
    /// `visit` gets, per item, whether it has a `chunks` list, the list, and the item's
    /// encoding (to build the whole item only where one is needed).
    pub fn feed_content(
        &mut self,
        chunk: &[u8],
        mut visit: impl FnMut(bool, &[ChunkRef], &[u8]),
    ) -> Result<(), ItemStreamError> {
        let mut chunks = Vec::new();
        self.stream.feed_encoded(chunk, |encoded| {
            chunks.clear();
            let has_chunks = content_chunks(encoded, &mut chunks)?;
            visit(has_chunks, &chunks, encoded);
            Ok::<_, ItemStreamError>(())
        })
    }

    /// Call after the last chunk: a stream that ends inside an item is corrupt.
    pub fn finish(&self) -> Result<(), ItemStreamError> {
        Ok(self.stream.finish()?)
    }
}

/// The packed items collected before chunks are cut off. Borg's `ChunkBuffer` waits for 8 MiB;
/// the result is the same either way (see [`ItemStreamWriter`]), and 1 MiB — twice the items
/// chunker's largest chunk, so every cut completes at least one chunk — keeps the buffer in the
/// CPU's cache and spreads the hashing of the stream over the run instead of leaving all of it
/// for the end (an unchanged backup of 20,000 mails has ~5 MiB of items).
const ITEM_BUFFER_SIZE: usize = 1 << 20;

/// Packs items into borg's item stream and cuts it into chunks with the items chunker, the way
/// borg's `ChunkBuffer` does: when the buffer passes its size it is chunked, every chunk but the
/// last is complete, and the last stays to grow with later items. The result equals one-pass
/// chunking of the whole stream (a cut depends only on the bytes up to it), so identical items
/// give identical item-stream chunks, and borg and we dedup each other's metadata.
pub struct ItemStreamWriter {
    seed: i32,
    buffer: Vec<u8>,
}

impl ItemStreamWriter {
    /// `seed`: the key's `chunk_seed`, as for file contents.
    pub fn new(seed: i32) -> Self {
        ItemStreamWriter {
            seed,
            buffer: Vec::new(),
        }
    }

    /// Adds an item; returns the item-stream chunks (plaintexts) that are now complete.
    pub fn push(&mut self, item: &Item) -> Vec<Vec<u8>> {
        item.to_value().encode(&mut self.buffer);
        self.cut_if_full()
    }

    /// [`ItemStreamWriter::push`] of an item already packed (`item.to_value().to_bytes()`),
    /// so that packing can happen on another thread, earlier.
    pub fn push_packed(&mut self, packed: &[u8]) -> Vec<Vec<u8>> {
        self.buffer.extend_from_slice(packed);
        self.cut_if_full()
    }

    fn cut_if_full(&mut self) -> Vec<Vec<u8>> {
        if self.buffer.len() > ITEM_BUFFER_SIZE {
            self.cut(false)
        } else {
            Vec::new()
        }
    }

    /// Ends the stream: every remaining chunk.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.cut(true)
    }

    /// Cuts everything buffered into chunks now (for a checkpoint, as borg's
    /// `flush(flush=True)` does); the stream goes on with the next item.
    pub fn flush(&mut self) -> Vec<Vec<u8>> {
        self.cut(true)
    }

    fn cut(&mut self, last: bool) -> Vec<Vec<u8>> {
        let mut sizes = chunk_sizes(ChunkerParams::ITEMS, self.seed, &self.buffer);
        if !last {
            sizes.pop(); // may still grow: keep it for the next round
        }
        let mut pos = 0;
        let chunks = sizes
            .into_iter()
            .map(|len| {
                pos += len;
                self.buffer[pos - len..pos].to_vec()
            })
            .collect();
        self.buffer.drain(..pos);
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::envelope::tests::vector_key;
    use crate::format::key::KeyType;

    #[test]
    fn item_stream_writer_matches_one_pass_chunking() {
        let items: Vec<Item> = (0..250_000u32)
            .map(|i| Item {
                path: format!("vmail/example.org/user{}/cur/{i}.mx:2,S", i % 97).into_bytes(),
                mode: Some(0o100640),
                mtime: 1_700_000_000_000_000_000 + i as i64 * 7_919,
                size: Some(i as u64),
                chunks: Some(Vec::new()),
                ..Item::default()
            })
            .collect();
        let mut writer = ItemStreamWriter::new(-77);
        let mut chunks = Vec::new();
        let mut stream = Vec::new();
        for item in &items {
            chunks.extend(writer.push(item));
            item.to_value().encode(&mut stream);
        }
        chunks.extend(writer.finish());
        assert!(
            stream.len() > 2 * ITEM_BUFFER_SIZE,
            "the test must cross several flushes"
        );
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, chunk_sizes(ChunkerParams::ITEMS, -77, &stream));
        assert_eq!(chunks.concat(), stream);
        let mut decoder = ItemStreamDecoder::new();
        let decoded: Vec<Item> = chunks
            .iter()
            .flat_map(|c| decoder.feed(c).unwrap())
            .collect();
        assert_eq!(decoded, items);
    }

    #[test]
    fn pack_unpack_round_trip_with_tam() {
        let key = vector_key(KeyType::Blake2Repokey);
        let meta = ArchiveMeta {
            version: 1,
            name: b"mail-2026-11-28".to_vec(),
            items: vec![[1; 32], [2; 32]],
            cmdline: vec![b"mailcow-borg".to_vec(), b"create".to_vec()],
            hostname: Some(b"mx".to_vec()),
            username: Some(b"root".to_vec()),
            time: b"2026-11-28T20:09:59.067426".to_vec(),
            time_end: Some(b"2026-11-28T20:10:00.000001".to_vec()),
            comment: Some(Vec::new()),
            chunker_params: Some(Value::Array(vec![
                Value::raw("buzhash"),
                Value::Int(19),
                Value::Int(23),
                Value::Int(21),
                Value::Int(4095),
            ])),
            size: Some(10),
            csize: Some(20),
            nfiles: Some(1),
            size_parts: Some(0),
            csize_parts: Some(0),
            nfiles_parts: Some(0),
            cwd: Some(b"/".to_vec()),
            extra: vec![(b"recreate_cmdline".to_vec(), Value::Array(vec![]))],
        };
        let packed = meta.pack(&key, [9; 64]);
        let (back, status) = ArchiveMeta::unpack(&key, &packed).unwrap();
        assert_eq!(status, TamStatus::Verified);
        assert_eq!(back, meta);
    }
}
