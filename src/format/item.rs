//! One entry of an archive's item stream: a file, directory, symlink, hardlink, fifo or device
//! (`docs/borg-format.md` §6.5, §6.6). Every 1.x key is modelled; unknown keys are kept and written
//! back.
//!
//! Paths and names are raw bytes: borg stores them with `surrogateescape`, which on POSIX means the
//! file name bytes unchanged, whatever their encoding.

use super::envelope::ObjectId;
use super::fields::{DictWriter, Fields, InvalidObject, int};
use super::msgpack::Value;

/// Borg 1.4's `ITEM_KEYS`: what a manifest's `item_keys` lists and `borg check` accepts.
pub const ITEM_KEYS: [&str; 23] = [
    "acl_access",
    "acl_default",
    "acl_extended",
    "acl_nfs4",
    "atime",
    "birthtime",
    "bsdflags",
    "chunks",
    "chunks_healthy",
    "ctime",
    "gid",
    "group",
    "hardlink_master",
    "mode",
    "mtime",
    "part",
    "path",
    "rdev",
    "size",
    "source",
    "uid",
    "user",
    "xattrs",
];

/// A reference to one content chunk: borg 1.x always writes `[id, size, csize]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ObjectId,
    /// Plaintext length.
    pub size: u64,
    /// Stored (compressed + encrypted) length; informational, may be 0.
    pub csize: u64,
}

impl ChunkRef {
    fn to_value(self) -> Value {
        Value::Array(vec![
            Value::raw(self.id.to_vec()),
            int(self.size),
            int(self.csize),
        ])
    }

    fn from_value(v: &Value) -> Option<ChunkRef> {
        let entry = v.as_array()?;
        // Only 3-element entries exist in 1.x; a 2-element entry (borg 2 style) is read with csize 0.
        if !(2..=3).contains(&entry.len()) {
            return None;
        }
        Some(ChunkRef {
            id: entry[0].as_raw()?.try_into().ok()?,
            size: u64::try_from(entry[1].as_int()?).ok()?,
            csize: entry
                .get(2)
                .map_or(Some(0), |c| u64::try_from(c.as_int()?).ok())?,
        })
    }
}

/// The content chunks of one item, read from its encoding without building the item — what
/// counting references needs of every item of every archive (`delete`, `info`, the chunk cache),
/// where building whole items cost most of the time. Appends them to `chunks` and says whether
/// the item has a `chunks` list at all (a file with content, even empty). The entries are checked
/// as [`Item::from_value`] checks them; the rest of the item is only walked over.
pub fn content_chunks(encoded: &[u8], chunks: &mut Vec<ChunkRef>) -> Result<bool, InvalidObject> {
    let invalid = |problem: String| InvalidObject {
        object: "item",
        problem,
    };
    let decode = |e: crate::format::msgpack::DecodeError| invalid(e.to_string());
    let mut reader = crate::format::msgpack::Reader::new(encoded);
    let entries = reader
        .map_len()
        .map_err(decode)?
        .ok_or_else(|| invalid("not a map".into()))?;
    let mut has_chunks = false;
    for _ in 0..entries {
        let key = reader.raw_bytes().map_err(decode)?;
        if key != Some(b"chunks".as_slice()) {
            reader.skip().map_err(decode)?;
            continue;
        }
        let bad = || invalid("invalid entry in chunks".into());
        let Some(n) = reader.array_len().map_err(decode)? else {
            return Err(invalid("field chunks is not an array".into()));
        };
        has_chunks = true;
        for _ in 0..n {
            let parts = reader.array_len().map_err(decode)?.ok_or_else(bad)?;
            // Only 3-element entries exist in 1.x; a 2-element entry (borg 2 style) has csize 0.
            if !(2..=3).contains(&parts) {
                return Err(bad());
            }
            let id = reader.raw_bytes().map_err(decode)?.ok_or_else(bad)?;
            let size = reader.int().map_err(decode)?.ok_or_else(bad)?;
            let csize = match parts {
                3 => reader.int().map_err(decode)?.ok_or_else(bad)?,
                _ => 0,
            };
            chunks.push(ChunkRef {
                id: id.try_into().map_err(|_| bad())?,
                size: u64::try_from(size).map_err(|_| bad())?,
                csize: u64::try_from(csize).map_err(|_| bad())?,
            });
        }
    }
    Ok(has_chunks)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Item {
    pub path: Vec<u8>,
    /// Symlink target, or the master's path for a hardlink slave.
    pub source: Option<Vec<u8>>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `Some(None)`: the key is present but nil (no name known, or `--numeric-ids`).
    pub user: Option<Option<Vec<u8>>>,
    pub group: Option<Option<Vec<u8>>>,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    pub atime: Option<i64>,
    pub ctime: Option<i64>,
    pub birthtime: Option<i64>,
    pub size: Option<u64>,
    pub chunks: Option<Vec<ChunkRef>>,
    pub chunks_healthy: Option<Vec<ChunkRef>>,
    pub hardlink_master: Option<bool>,
    pub rdev: Option<u64>,
    pub xattrs: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    pub bsdflags: Option<u32>,
    pub acl_access: Option<Vec<u8>>,
    pub acl_default: Option<Vec<u8>>,
    pub acl_extended: Option<Vec<u8>>,
    pub acl_nfs4: Option<Vec<u8>>,
    /// Part number of a partial file in a checkpoint archive.
    pub part: Option<u64>,
    /// Keys this model does not know, kept as read.
    pub extra: Vec<(Vec<u8>, Value)>,
}

const S_IFMT: u32 = 0o170000;

/// What kind of filesystem object an item is, from the type bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Unknown,
}

impl Item {
    pub fn kind(&self) -> ItemKind {
        match self.mode.unwrap_or(0) & S_IFMT {
            0o100000 => ItemKind::Regular,
            0o040000 => ItemKind::Directory,
            0o120000 => ItemKind::Symlink,
            0o010000 => ItemKind::Fifo,
            0o020000 => ItemKind::CharDevice,
            0o060000 => ItemKind::BlockDevice,
            0o140000 => ItemKind::Socket,
            _ => ItemKind::Unknown,
        }
    }

    /// A hardlink slave: refers to an earlier master through `source` and has no content of its own.
    pub fn is_hardlink_slave(&self) -> bool {
        self.kind() != ItemKind::Symlink && self.source.is_some()
    }

    /// Sum of the chunk sizes; borg's extract insists it equals `size`.
    pub fn chunks_size(&self) -> u64 {
        self.chunks.iter().flatten().map(|c| c.size).sum()
    }

    pub fn from_value(value: Value) -> Result<Item, InvalidObject> {
        let mut f = Fields::new("item", value)?;
        let chunk_list =
            |f: &mut Fields, key: &str| -> Result<Option<Vec<ChunkRef>>, InvalidObject> {
                match f.array(key)? {
                    None => Ok(None),
                    Some(list) => list
                        .iter()
                        .map(ChunkRef::from_value)
                        .collect::<Option<Vec<_>>>()
                        .map(Some)
                        .ok_or_else(|| f.error(format!("invalid entry in {key}"))),
                }
            };
        let path = f.bytes("path")?;
        let path = f.require("path", path)?;
        let mtime = f.timestamp("mtime")?;
        let xattrs = match f.map("xattrs")? {
            None => None,
            Some(map) => Some(
                map.into_iter()
                    .map(|(k, v)| match (k, v) {
                        (Value::Raw(k), Value::Raw(v)) => Ok((k, v)),
                        (Value::Raw(k), Value::Nil) => Ok((k, Vec::new())),
                        _ => Err(f.error("xattrs must map strings to strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Item {
            mtime: f.require("mtime", mtime)?,
            path,
            source: f.bytes("source")?,
            mode: f.int("mode")?,
            uid: f.int("uid")?,
            gid: f.int("gid")?,
            user: f.nullable_bytes("user")?,
            group: f.nullable_bytes("group")?,
            atime: f.timestamp("atime")?,
            ctime: f.timestamp("ctime")?,
            birthtime: f.timestamp("birthtime")?,
            size: f.int("size")?,
            chunks: chunk_list(&mut f, "chunks")?,
            chunks_healthy: chunk_list(&mut f, "chunks_healthy")?,
            hardlink_master: f.bool("hardlink_master")?,
            rdev: f.int("rdev")?,
            xattrs,
            bsdflags: f.int("bsdflags")?,
            acl_access: f.bytes("acl_access")?,
            acl_default: f.bytes("acl_default")?,
            acl_extended: f.bytes("acl_extended")?,
            acl_nfs4: f.bytes("acl_nfs4")?,
            part: f.int("part")?,
            extra: f.rest(),
        })
    }

    pub fn to_value(&self) -> Value {
        let raw = |b: &Option<Vec<u8>>| b.as_ref().map(|b| Value::raw(b.clone()));
        let nullable = |b: &Option<Option<Vec<u8>>>| {
            b.as_ref()
                .map(|name| name.as_ref().map_or(Value::Nil, |n| Value::raw(n.clone())))
        };
        let chunks = |c: &Option<Vec<ChunkRef>>| {
            c.as_ref()
                .map(|list| Value::Array(list.iter().map(|c| c.to_value()).collect()))
        };
        let mut d = DictWriter::default();
        d.put("path", Value::raw(self.path.clone()));
        d.put("mtime", int(self.mtime));
        d.put_opt("source", raw(&self.source));
        d.put_opt("mode", self.mode.map(int));
        d.put_opt("uid", self.uid.map(int));
        d.put_opt("gid", self.gid.map(int));
        d.put_opt("user", nullable(&self.user));
        d.put_opt("group", nullable(&self.group));
        d.put_opt("atime", self.atime.map(int));
        d.put_opt("ctime", self.ctime.map(int));
        d.put_opt("birthtime", self.birthtime.map(int));
        d.put_opt("size", self.size.map(int));
        d.put_opt("chunks", chunks(&self.chunks));
        d.put_opt("chunks_healthy", chunks(&self.chunks_healthy));
        d.put_opt("hardlink_master", self.hardlink_master.map(Value::Bool));
        d.put_opt("rdev", self.rdev.map(int));
        d.put_opt(
            "xattrs",
            self.xattrs.as_ref().map(|x| {
                // Borg stores an empty value as nil, and reads nil back as empty.
                Value::sorted_map(x.iter().map(|(k, v)| {
                    let value = if v.is_empty() {
                        Value::Nil
                    } else {
                        Value::raw(v.clone())
                    };
                    (k.clone(), value)
                }))
            }),
        );
        d.put_opt("bsdflags", self.bsdflags.map(int));
        d.put_opt("acl_access", raw(&self.acl_access));
        d.put_opt("acl_default", raw(&self.acl_default));
        d.put_opt("acl_extended", raw(&self.acl_extended));
        d.put_opt("acl_nfs4", raw(&self.acl_nfs4));
        d.put_opt("part", self.part.map(int));
        d.extend(&self.extra);
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::msgpack;

    #[test]
    fn content_chunks_reads_what_from_value_reads() {
        let chunk = |n: u8| ChunkRef {
            id: [n; 32],
            size: 1000 + u64::from(n),
            csize: 60_000 + u64::from(n),
        };
        let mut file = Item {
            path: b"vmail/a/cur/1".to_vec(),
            mode: Some(0o100600),
            chunks: Some(vec![chunk(1), chunk(2)]),
            chunks_healthy: Some(vec![chunk(9)]),
            ..Item::default()
        };
        let empty = Item {
            chunks: Some(Vec::new()),
            ..file.clone()
        };
        let dir = Item {
            path: b"vmail".to_vec(),
            mode: Some(0o40755),
            ..Item::default()
        };
        file.xattrs = Some(vec![(b"user.x".to_vec(), b"chunks".to_vec())]);
        for item in [file, empty, dir] {
            let encoded = item.to_value().to_bytes();
            let mut chunks = Vec::new();
            let has = content_chunks(&encoded, &mut chunks).unwrap();
            assert_eq!(has, item.chunks.is_some());
            assert_eq!(chunks, item.chunks.clone().unwrap_or_default());
        }
        // Entries Item::from_value refuses are refused here too.
        for bad in [
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![Value::Array(vec![
                Value::raw(vec![1; 31]),
                Value::Int(1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::raw(vec![1; 32]),
                Value::Int(-1),
            ])]),
            Value::Int(5),
        ] {
            let encoded =
                Value::sorted_map([("path", Value::raw(b"x".to_vec())), ("chunks", bad.clone())])
                    .to_bytes();
            assert!(content_chunks(&encoded, &mut Vec::new()).is_err(), "{bad}");
            assert!(
                Item::from_value(msgpack::decode(&encoded).unwrap()).is_err(),
                "{bad}"
            );
        }
        // A cut-off item is an error, never a panic.
        let encoded = small_file().to_value().to_bytes();
        for end in 0..encoded.len() {
            assert!(content_chunks(&encoded[..end], &mut Vec::new()).is_err());
        }
    }

    fn small_file() -> Item {
        Item {
            path: b"f".to_vec(),
            chunks: Some(vec![ChunkRef {
                id: [7; 32],
                size: 1,
                csize: 2,
            }]),
            ..Item::default()
        }
    }

    #[test]
    fn borg_shaped_items_round_trip_byte_exact() {
        // Keys sorted as borg writes them: a hardlink master with an xattr and one chunk.
        let item = Item {
            path: b"src/dir/hard.txt".to_vec(),
            mode: Some(0o100644),
            uid: Some(0),
            gid: Some(0),
            user: Some(Some(b"root".to_vec())),
            group: Some(None),
            mtime: 1_700_000_000_123_456_789,
            ctime: Some(1_700_000_000_000_000_001),
            size: Some(6),
            chunks: Some(vec![ChunkRef {
                id: [7; 32],
                size: 6,
                csize: 49,
            }]),
            hardlink_master: Some(true),
            xattrs: Some(vec![(b"user.test".to_vec(), b"val".to_vec())]),
            extra: vec![(b"acl".to_vec(), Value::raw("attic"))],
            ..Item::default()
        };
        let packed = item.to_value().to_bytes();
        let keys: Vec<_> = msgpack::decode(&packed)
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| String::from_utf8(k.as_raw().unwrap().to_vec()).unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let back = Item::from_value(msgpack::decode(&packed).unwrap()).unwrap();
        assert_eq!(back, item);
        assert_eq!(back.to_value().to_bytes(), packed);
        assert_eq!(back.chunks_size(), 6);
        assert_eq!(back.kind(), ItemKind::Regular);
    }

    #[test]
    fn bigint_timestamps_and_bad_fields() {
        let v = Value::sorted_map([
            ("path", Value::raw("x")),
            ("mtime", Value::raw(vec![0x01, 0x02])),
        ]);
        assert_eq!(Item::from_value(v).unwrap().mtime, 0x0201);
        let missing = Value::sorted_map([("path", Value::raw("x"))]);
        assert!(
            Item::from_value(missing)
                .unwrap_err()
                .to_string()
                .contains("mtime")
        );
        let bad_chunks = Value::sorted_map([
            ("path", Value::raw("x")),
            ("mtime", Value::Int(1)),
            ("chunks", Value::Array(vec![Value::Int(3)])),
        ]);
        assert!(Item::from_value(bad_chunks).is_err());
    }
}
