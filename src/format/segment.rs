//! borg 1.x segment files (`docs/borg-format.md` §2.1): the entries of one segment's bytes, and
//! the replay of a repository's segments to its objects as of the last COMMIT.
//!
//! The client never reads segments (the server does); the tests read what real borg left on disk
//! with this, and so may any tool that looks at a repository directly. The bytes come from a host
//! that is not trusted: every size is checked against what is left and against borg's own limit
//! before it is used, and garbage is an error, never a panic.

use std::collections::HashMap;

use super::envelope::ObjectId;

/// What every segment file starts with.
pub const MAGIC: &[u8; 8] = b"BORG_SEG";
pub const TAG_PUT: u8 = 0;
pub const TAG_DELETE: u8 = 1;
pub const TAG_COMMIT: u8 = 2;
/// `crc32 u32le ‖ size u32le ‖ tag u8`: all of a COMMIT.
pub const HEADER_SIZE: usize = 9;
/// The header and an object id: all of a DELETE, the start of a PUT.
pub const ID_HEADER_SIZE: usize = HEADER_SIZE + 32;
/// The largest entry borg writes or reads (its `MAX_OBJECT_SIZE`, 20 MiB): a PUT of the largest
/// stored object.
pub const MAX_ENTRY_SIZE: usize = super::MAX_DATA_SIZE + ID_HEADER_SIZE;

/// What one entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Put { id: ObjectId, data: &'a [u8] },
    Delete { id: ObjectId },
    Commit,
}

/// One entry and where it lies in its segment (`offset` is where its CRC starts, `size` counts
/// the whole entry, as the size field does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub offset: usize,
    pub size: usize,
    pub record: Record<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a borg segment: no BORG_SEG magic")]
    Magic,
    #[error("segment entry at offset {offset} is cut off: {needed} bytes needed, {left} left")]
    Truncated {
        offset: usize,
        needed: usize,
        left: usize,
    },
    #[error("segment entry at offset {offset} has size {size}, outside {min}..={max}")]
    Size {
        offset: usize,
        size: usize,
        min: usize,
        max: usize,
    },
    #[error("segment entry at offset {offset} fails its CRC")]
    Crc { offset: usize },
    #[error("segment entry at offset {offset} has the unknown tag {tag}")]
    Tag { offset: usize, tag: u8 },
}

/// The entries of one segment, in order. After the first error the iterator ends.
pub fn entries(segment: &[u8]) -> Entries<'_> {
    Entries {
        segment,
        pos: 0,
        done: false,
    }
}

/// Every entry of one segment, or the first thing wrong with it.
pub fn parse(segment: &[u8]) -> Result<Vec<Entry<'_>>, SegmentError> {
    entries(segment).collect()
}

pub struct Entries<'a> {
    segment: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.pos == 0 {
            if !self.segment.starts_with(MAGIC) {
                self.done = true;
                return Some(Err(SegmentError::Magic));
            }
            self.pos = MAGIC.len();
        }
        if self.pos == self.segment.len() {
            self.done = true;
            return None;
        }
        let result = entry_at(self.segment, self.pos);
        match &result {
            Ok(entry) => self.pos += entry.size,
            Err(_) => self.done = true,
        }
        Some(result)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The entry at `offset`; the caller has checked that at least one byte is left.
fn entry_at(segment: &[u8], offset: usize) -> Result<Entry<'_>, SegmentError> {
    let rest = &segment[offset..];
    if rest.len() < HEADER_SIZE {
        return Err(SegmentError::Truncated {
            offset,
            needed: HEADER_SIZE,
            left: rest.len(),
        });
    }
    let crc = u32_at(rest, 0);
    // A u32 always fits a usize on the targets we build for (64-bit Linux); saturate elsewhere.
    let size = usize::try_from(u32_at(rest, 4)).unwrap_or(usize::MAX);
    if !(HEADER_SIZE..=MAX_ENTRY_SIZE).contains(&size) {
        return Err(SegmentError::Size {
            offset,
            size,
            min: HEADER_SIZE,
            max: MAX_ENTRY_SIZE,
        });
    }
    if size > rest.len() {
        return Err(SegmentError::Truncated {
            offset,
            needed: size,
            left: rest.len(),
        });
    }
    let entry = &rest[..size];
    if crc32fast::hash(&entry[4..]) != crc {
        return Err(SegmentError::Crc { offset });
    }
    let tag = entry[8];
    // What borg writes: a bare header for COMMIT, header and id for DELETE, and data after the
    // id for PUT.
    let (min, max) = match tag {
        TAG_PUT => (ID_HEADER_SIZE, MAX_ENTRY_SIZE),
        TAG_DELETE => (ID_HEADER_SIZE, ID_HEADER_SIZE),
        TAG_COMMIT => (HEADER_SIZE, HEADER_SIZE),
        tag => return Err(SegmentError::Tag { offset, tag }),
    };
    if !(min..=max).contains(&size) {
        return Err(SegmentError::Size {
            offset,
            size,
            min,
            max,
        });
    }
    let id = || -> ObjectId {
        let mut id = [0u8; 32];
        id.copy_from_slice(&entry[HEADER_SIZE..ID_HEADER_SIZE]);
        id
    };
    let record = match tag {
        TAG_PUT => Record::Put {
            id: id(),
            data: &entry[ID_HEADER_SIZE..],
        },
        TAG_DELETE => Record::Delete { id: id() },
        _ => Record::Commit,
    };
    Ok(Entry {
        offset,
        size,
        record,
    })
}

/// A repository's segments replayed in order (`docs/borg-format.md` §2.1): PUT adds or
/// supersedes, DELETE removes, and a COMMIT commits every entry before it, across segments. What
/// counts is the state as of the last COMMIT.
#[derive(Debug, Default)]
pub struct Replay {
    committed: HashMap<ObjectId, Vec<u8>>,
    /// Since the last COMMIT: each id's newest data, or `None` for a DELETE.
    pending: HashMap<ObjectId, Option<Vec<u8>>>,
}

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Replays the next segment (segments go in the order of their numbers). On an error the
    /// replay stands after the entries before it.
    pub fn segment(&mut self, segment: &[u8]) -> Result<(), SegmentError> {
        for entry in entries(segment) {
            match entry?.record {
                Record::Put { id, data } => {
                    self.pending.insert(id, Some(data.to_vec()));
                }
                Record::Delete { id } => {
                    self.pending.insert(id, None);
                }
                Record::Commit => {
                    for (id, data) in self.pending.drain() {
                        match data {
                            Some(data) => self.committed.insert(id, data),
                            None => self.committed.remove(&id),
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// The objects as of the last COMMIT; what came after it is dropped, as borg drops it.
    pub fn committed(self) -> HashMap<ObjectId, Vec<u8>> {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment 1 of `testdata/repos/borg14-none`, byte for byte: real borg 1.4.5's COMMIT alone.
    const BORG_COMMIT_SEGMENT: [u8; 17] = [
        b'B', b'O', b'R', b'G', b'_', b'S', b'E', b'G', // magic
        0x40, 0xf4, 0x3c, 0x25, // crc32 of the 5 bytes after it
        0x09, 0x00, 0x00, 0x00, // size 9
        0x02, // COMMIT
    ];

    /// Segment 3 of `testdata/repos/borg14-none` (the same in `borg12-repokey`): the DELETE of
    /// the manifest (id all zeros) that every transaction after the first begins with.
    fn borg_delete_segment() -> Vec<u8> {
        let mut bytes = b"BORG_SEG".to_vec();
        bytes.extend_from_slice(&[0x8c, 0xec, 0x0d, 0x8a, 0x29, 0x00, 0x00, 0x00, 0x01]);
        bytes.extend_from_slice(&[0u8; 32]);
        bytes
    }

    /// An entry built by hand: size, tag, optional id and data, with its CRC in front.
    fn entry(tag: u8, id: Option<u8>, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let size = 4 + 4 + 1 + id.map_or(0, |_| 32) + data.len();
        body.extend_from_slice(&(size as u32).to_le_bytes());
        body.push(tag);
        if let Some(b) = id {
            body.extend_from_slice(&[b; 32]);
        }
        body.extend_from_slice(data);
        let mut out = crc32fast::hash(&body).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn segment(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn the_crc_is_zlibs() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn borgs_own_commit_and_delete_segments_parse() {
        assert_eq!(
            parse(&BORG_COMMIT_SEGMENT).unwrap(),
            vec![Entry {
                offset: 8,
                size: 9,
                record: Record::Commit
            }]
        );
        let delete = borg_delete_segment();
        assert_eq!(
            parse(&delete).unwrap(),
            vec![Entry {
                offset: 8,
                size: 41,
                record: Record::Delete { id: [0; 32] }
            }]
        );
        // Our hand-built entries are the same bytes.
        assert_eq!(
            segment(&[entry(TAG_COMMIT, None, b"")]),
            BORG_COMMIT_SEGMENT
        );
        assert_eq!(segment(&[entry(TAG_DELETE, Some(0), b"")]), delete);
    }

    #[test]
    fn entries_are_found_with_their_offsets() {
        let bytes = segment(&[
            entry(TAG_PUT, Some(1), b"first"),
            entry(TAG_PUT, Some(2), b""),
            entry(TAG_DELETE, Some(1), b""),
            entry(TAG_COMMIT, None, b""),
        ]);
        let parsed = parse(&bytes).unwrap();
        let offsets: Vec<(usize, usize)> = parsed.iter().map(|e| (e.offset, e.size)).collect();
        assert_eq!(offsets, [(8, 46), (54, 41), (95, 41), (136, 9)]);
        assert_eq!(
            parsed[0].record,
            Record::Put {
                id: [1; 32],
                data: b"first"
            }
        );
        assert_eq!(
            parsed[1].record,
            Record::Put {
                id: [2; 32],
                data: b""
            }
        );
        assert_eq!(parsed[2].record, Record::Delete { id: [1; 32] });
        assert_eq!(parsed[3].record, Record::Commit);
        // The magic alone is an empty segment.
        assert_eq!(parse(MAGIC).unwrap(), vec![]);
    }

    #[test]
    fn replay_keeps_the_state_as_of_the_last_commit_across_segments() {
        let mut replay = Replay::new();
        // A transaction whose entries are spread over segments, the COMMIT alone in the last.
        replay
            .segment(&segment(&[
                entry(TAG_PUT, Some(1), b"one"),
                entry(TAG_PUT, Some(2), b"two"),
            ]))
            .unwrap();
        replay
            .segment(&segment(&[entry(TAG_PUT, Some(1), b"one, again")]))
            .unwrap();
        replay
            .segment(&segment(&[entry(TAG_COMMIT, None, b"")]))
            .unwrap();
        // The next transaction deletes 2 and adds 3, but never commits.
        replay
            .segment(&segment(&[
                entry(TAG_DELETE, Some(2), b""),
                entry(TAG_PUT, Some(3), b"three"),
            ]))
            .unwrap();
        let mut committed: Vec<_> = replay.committed().into_iter().collect();
        committed.sort();
        assert_eq!(
            committed,
            vec![
                ([1; 32], b"one, again".to_vec()),
                ([2; 32], b"two".to_vec())
            ]
        );

        let mut replay = Replay::new();
        replay
            .segment(&segment(&[
                entry(TAG_PUT, Some(2), b"two"),
                entry(TAG_COMMIT, None, b""),
                entry(TAG_DELETE, Some(2), b""),
                entry(TAG_PUT, Some(4), b"four"),
                entry(TAG_COMMIT, None, b""),
            ]))
            .unwrap();
        let committed: Vec<_> = replay.committed().into_iter().collect();
        assert_eq!(committed, vec![([4; 32], b"four".to_vec())]);
    }

    #[test]
    fn bad_segments_are_errors() {
        let good = segment(&[
            entry(TAG_PUT, Some(1), b"data"),
            entry(TAG_COMMIT, None, b""),
        ]);
        assert_eq!(parse(b"BORG_SE"), Err(SegmentError::Magic));
        assert_eq!(parse(b"NOT_SEG\0"), Err(SegmentError::Magic));
        assert_eq!(parse(b""), Err(SegmentError::Magic));

        // Cut off inside the header and inside the data.
        assert_eq!(
            parse(&good[..8 + 5]),
            Err(SegmentError::Truncated {
                offset: 8,
                needed: 9,
                left: 5
            })
        );
        assert_eq!(
            parse(&good[..8 + 44]),
            Err(SegmentError::Truncated {
                offset: 8,
                needed: 45,
                left: 44
            })
        );

        // A flipped bit anywhere in an entry.
        let mut flipped = good.clone();
        flipped[8 + 43] ^= 1;
        assert_eq!(parse(&flipped), Err(SegmentError::Crc { offset: 8 }));

        // Sizes below a header, above borg's limit, and wrong for the tag (with a valid CRC).
        for size in [0u32, 8, u32::MAX, MAX_ENTRY_SIZE as u32 + 1] {
            let mut bytes = good.clone();
            bytes[12..16].copy_from_slice(&size.to_le_bytes());
            assert!(
                matches!(parse(&bytes), Err(SegmentError::Size { offset: 8, .. })),
                "size {size}"
            );
        }
        let short_put = segment(&[entry(TAG_PUT, None, b"0123")]);
        assert_eq!(
            parse(&short_put),
            Err(SegmentError::Size {
                offset: 8,
                size: 13,
                min: 41,
                max: MAX_ENTRY_SIZE
            })
        );
        let long_delete = segment(&[entry(TAG_DELETE, Some(1), b"x")]);
        assert!(matches!(
            parse(&long_delete),
            Err(SegmentError::Size { size: 42, .. })
        ));
        let long_commit = segment(&[entry(TAG_COMMIT, None, b"x")]);
        assert!(matches!(
            parse(&long_commit),
            Err(SegmentError::Size { size: 10, .. })
        ));
        let unknown = segment(&[entry(TAG_COMMIT, None, b""), entry(3, Some(1), b"")]);
        assert_eq!(
            parse(&unknown),
            Err(SegmentError::Tag { offset: 17, tag: 3 })
        );

        // The iterator gives what was sound before the error, then the error, then ends.
        let mut it = entries(&unknown);
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(it.next(), Some(Err(SegmentError::Tag { .. }))));
        assert_eq!(it.next(), None);

        // A replay refuses the bad segment.
        assert_eq!(
            Replay::new().segment(&flipped),
            Err(SegmentError::Crc { offset: 8 })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let good = segment(&[
            entry(TAG_PUT, Some(7), &[0xa5; 300]),
            entry(TAG_DELETE, Some(7), b""),
            entry(TAG_COMMIT, None, b""),
        ]);
        // Every truncation, and every single-byte change at every position.
        for len in 0..=good.len() {
            let _ = parse(&good[..len]);
        }
        for pos in 0..good.len() {
            for value in [0x00, 0x01, 0x02, 0x29, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[pos] = value;
                let _ = parse(&bytes);
                let _ = Replay::new().segment(&bytes);
            }
        }
        // Pseudo-random bytes after the magic, with sizes that point anywhere.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let mut bytes = MAGIC.to_vec();
            for _ in 0..(round % 97) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            if let Ok(entries) = parse(&bytes) {
                assert!(entries.iter().all(|e| e.offset + e.size <= bytes.len()));
            }
        }
    }
}
