//! POSIX ACLs between the kernel's binary xattr form and the text borg stores.
//!
//! Borg reads ACLs through libacl (`acl_to_text`) and stores that text after a small rewrite
//! (`platform/linux.pyx: acl_append_numeric_ids`). We have no libacl in a static binary, so both
//! directions work on the `system.posix_acl_access` / `system.posix_acl_default` xattrs, whose
//! format is the kernel's (`include/uapi/linux/posix_acl_xattr.h`), and reproduce libacl's text
//! byte for byte, quirks included, so that our items equal borg's:
//!
//! - entries in the kernel's order (owner, named users by id, owning group, named groups by id,
//!   mask, other), one per line, `tag:qualifier:rwx` with `-` for a missing permission;
//! - a named entry's qualifier is the user or group name, or the number when there is no name;
//! - when a mask takes away permissions of a named user, the owning group or a named group,
//!   libacl appends `\t#effective:r--`. Borg strips `' *#.*'` — spaces only — so the **tab
//!   stays** (`user:alice:rw-\t:1001`);
//! - borg then appends `:<id>` to named entries, the id looked up from the *name*, falling back
//!   to the name itself. `--numeric-ids` puts the id in place of the name as well.

use std::io;

use super::owners::Owners;

const ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One `(tag, permissions, id)` entry.
type Entry = (u16, u16, u32);

/// The entries of an xattr value; `None` if it is not a version-2 ACL.
fn parse_xattr(value: &[u8]) -> Option<Vec<Entry>> {
    let (version, body) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != ACL_XATTR_VERSION || body.len() % 8 != 0 {
        return None;
    }
    Some(
        body.chunks_exact(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect(),
    )
}

/// libacl's `acl_extended_*` for an access ACL: more than the three entries the mode bits say.
pub fn is_extended(access_xattr: &[u8]) -> bool {
    parse_xattr(access_xattr).is_some_and(|entries| entries.len() > 3)
}

fn push_entry(value: &mut Vec<u8>, (tag, perm, id): Entry) {
    value.extend_from_slice(&tag.to_le_bytes());
    value.extend_from_slice(&perm.to_le_bytes());
    value.extend_from_slice(&id.to_le_bytes());
}

fn perm_text(perm: u16) -> [u8; 3] {
    let bit = |flag: u16, c: u8| if perm & flag != 0 { c } else { b'-' };
    [bit(4, b'r'), bit(2, b'w'), bit(1, b'x')]
}

/// The text borg stores for an ACL xattr value (an empty ACL gives empty text, as libacl's does).
pub fn to_text(value: &[u8], owners: &Owners, numeric_ids: bool) -> io::Result<Vec<u8>> {
    let entries = parse_xattr(value)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown ACL xattr format"))?;
    let mask = entries.iter().find(|e| e.0 == MASK).map(|e| e.1);
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
    for (tag, perm, id) in entries {
        let (kind, named) = match tag {
            USER_OBJ => ("user", None),
            USER => ("user", Some(owners.user_name(id))),
            GROUP_OBJ => ("group", None),
            GROUP => ("group", Some(owners.group_name(id))),
            MASK => ("mask", None),
            OTHER => ("other", None),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("ACL entry of unknown type {tag:#x}"),
                ));
            }
        };
        let mut line = format!("{kind}:").into_bytes();
        let name = named.map(|name| match name {
            Some(name) => name.to_vec(),
            None => id.to_string().into_bytes(),
        });
        // The id borg appends: looked up again from the name, the name itself if that fails.
        let appended = name.as_ref().map(|name| {
            let looked_up = if tag == USER {
                owners.uid(name)
            } else {
                owners.gid(name)
            };
            looked_up.map_or_else(|| name.clone(), |id| id.to_string().into_bytes())
        });
        match (&name, &appended, numeric_ids) {
            (Some(_), Some(id), true) => line.extend_from_slice(id),
            (Some(name), _, false) => line.extend_from_slice(name),
            _ => {}
        }
        line.push(b':');
        line.extend_from_slice(&perm_text(perm));
        let masked = matches!(tag, USER | GROUP_OBJ | GROUP);
        if let Some(mask) = mask
            && masked
            && perm & !mask & 7 != 0
        {
            line.push(b'\t'); // what is left of libacl's "\t#effective:..." after borg's strip
        }
        if let Some(id) = appended {
            line.push(b':');
            line.extend_from_slice(&id);
        }
        lines.push(line);
    }
    Ok(lines.join(&b'\n'))
}

/// Borg's ACL text (`tag:qualifier:perms[:id]` per line) to the kernel's binary xattr value.
/// Names are mapped to this machine's ids when they exist here, else the stored id is used;
/// `numeric_ids` always uses the stored id.
pub fn to_xattr(text: &[u8], owners: &Owners, numeric_ids: bool) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ACL {what}"));
    let mut entries = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        if fields.len() < 3 {
            return Err(bad("entry without permissions"));
        }
        let (tag, qualifier, perms) = (fields[0], fields[1], fields[2]);
        let stored_id = fields
            .get(3)
            .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok());
        let numeric = std::str::from_utf8(qualifier)
            .ok()
            .and_then(|q| q.parse().ok());
        let id_for = |lookup: &dyn Fn(&[u8]) -> Option<u32>| {
            if numeric_ids {
                stored_id.or(numeric)
            } else {
                lookup(qualifier).or(stored_id).or(numeric)
            }
            .ok_or_else(|| bad("entry names an unknown user or group"))
        };
        let (tag, id) = match (tag, qualifier.is_empty()) {
            (b"user", true) => (USER_OBJ, ACL_UNDEFINED_ID),
            (b"user", false) => (USER, id_for(&|n| owners.uid(n))?),
            (b"group", true) => (GROUP_OBJ, ACL_UNDEFINED_ID),
            (b"group", false) => (GROUP, id_for(&|n| owners.gid(n))?),
            (b"mask", _) => (MASK, ACL_UNDEFINED_ID),
            (b"other", _) => (OTHER, ACL_UNDEFINED_ID),
            _ => return Err(bad("entry of unknown type")),
        };
        let mut perm = 0u16;
        for (i, flag) in [(b'r', 4), (b'w', 2), (b'x', 1)] {
            if perms.contains(&i) {
                perm |= flag;
            }
        }
        entries.push((tag, perm, id));
    }
    // The kernel requires entries ordered by tag, and named ones by id.
    entries.sort_by_key(|(tag, _, id)| (*tag, *id));
    let mut value = ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for entry in entries {
        push_entry(&mut value, entry);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::owners::tests::sample;

    fn xattr(entries: &[Entry]) -> Vec<u8> {
        let mut value = ACL_XATTR_VERSION.to_le_bytes().to_vec();
        for e in entries {
            push_entry(&mut value, *e);
        }
        value
    }

    #[test]
    fn acl_text_becomes_the_kernels_binary_form() {
        let owners = sample();
        let text = b"user::rw-\nuser:alice:r--:1234\ngroup::r--\ngroup:wheel:rwx:60\nmask::rwx\nother::---";
        let expected = xattr(&[
            (USER_OBJ, 6, u32::MAX),
            (USER, 4, 1001), // alice exists here: her local uid wins
            (GROUP_OBJ, 4, u32::MAX),
            (GROUP, 7, 60), // wheel does not: the stored gid
            (MASK, 7, u32::MAX),
            (OTHER, 0, u32::MAX),
        ]);
        assert_eq!(to_xattr(text, &owners, false).unwrap(), expected);
        let numeric = to_xattr(text, &owners, true).unwrap();
        assert_eq!(&numeric[12..20], &xattr(&[(USER, 4, 1234)])[4..]);
    }

    #[test]
    fn kernel_form_becomes_borgs_text_with_the_effective_tab() {
        // setfacl -m u:4242:rwx,u:alice:rw,g:root:rw,m::r — as borg 1.4.5 stored it (names that
        // do not resolve stay numbers and are appended as they are).
        let value = xattr(&[
            (USER_OBJ, 6, u32::MAX),
            (USER, 6, 1001),
            (USER, 7, 4242),
            (GROUP_OBJ, 6, u32::MAX),
            (GROUP, 6, 0),
            (MASK, 4, u32::MAX),
            (OTHER, 4, u32::MAX),
        ]);
        let owners = sample();
        assert_eq!(
            to_text(&value, &owners, false).unwrap(),
            b"user::rw-\nuser:alice:rw-\t:1001\nuser:4242:rwx\t:4242\ngroup::rw-\t\ngroup:root:rw-\t:0\nmask::r--\nother::r--"
        );
        assert_eq!(
            to_text(&value, &owners, true).unwrap(),
            b"user::rw-\nuser:1001:rw-\t:1001\nuser:4242:rwx\t:4242\ngroup::rw-\t\ngroup:0:rw-\t:0\nmask::r--\nother::r--"
        );
        assert!(is_extended(&value));
        let trivial = xattr(&[
            (USER_OBJ, 6, u32::MAX),
            (GROUP_OBJ, 4, u32::MAX),
            (OTHER, 0, u32::MAX),
        ]);
        assert!(!is_extended(&trivial));
        assert_eq!(
            to_text(&trivial, &owners, false).unwrap(),
            b"user::rw-\ngroup::r--\nother::---"
        );
        assert_eq!(to_text(&xattr(&[]), &owners, false).unwrap(), b"");
    }
}
