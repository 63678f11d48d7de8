//! User and group names, in both directions, from the local account databases.
//!
//! Borg stores an owner's name next to its number (`user`/`group`) and restores by name when the
//! name exists on the restoring machine. It asks Python's `pwd`/`grp`, which go through NSS. A
//! static binary cannot load glibc's NSS modules, and in the helper container the files are all
//! there is, so `/etc/passwd` and `/etc/group` are read directly. Where two entries share an id,
//! the first wins, as `getpwuid` answers.

use std::collections::HashMap;
use std::path::Path;

use crate::format::item::Item;

#[derive(Default)]
pub struct Owners {
    users: HashMap<Vec<u8>, u32>,
    groups: HashMap<Vec<u8>, u32>,
    user_names: HashMap<u32, Vec<u8>>,
    group_names: HashMap<u32, Vec<u8>>,
}

impl Owners {
    /// Reads `/etc/passwd` and `/etc/group`; missing files mean "no names known".
    pub fn load() -> Owners {
        Owners::from_databases(
            &std::fs::read(Path::new("/etc/passwd")).unwrap_or_default(),
            &std::fs::read(Path::new("/etc/group")).unwrap_or_default(),
        )
    }

    /// From the contents of a passwd and a group file.
    pub fn from_databases(passwd: &[u8], group: &[u8]) -> Owners {
        let users = parse_id_db(passwd);
        let groups = parse_id_db(group);
        let first_names = |entries: &[(Vec<u8>, u32)]| {
            let mut names = HashMap::new();
            for (name, id) in entries {
                names.entry(*id).or_insert_with(|| name.clone());
            }
            names
        };
        Owners {
            user_names: first_names(&users),
            group_names: first_names(&groups),
            users: users.into_iter().rev().collect(),
            groups: groups.into_iter().rev().collect(),
        }
    }

    pub fn uid(&self, name: &[u8]) -> Option<u32> {
        self.users.get(name).copied()
    }

    pub fn gid(&self, name: &[u8]) -> Option<u32> {
        self.groups.get(name).copied()
    }

    pub fn user_name(&self, uid: u32) -> Option<&[u8]> {
        self.user_names.get(&uid).map(Vec::as_slice)
    }

    pub fn group_name(&self, gid: u32) -> Option<&[u8]> {
        self.group_names.get(&gid).map(Vec::as_slice)
    }

    /// The uid and gid to give an extracted item.
    pub fn ids_for(&self, item: &Item, numeric_ids: bool) -> (Option<u32>, Option<u32>) {
        if numeric_ids {
            return (item.uid, item.gid);
        }
        let named = |name: &Option<Option<Vec<u8>>>, lookup: &dyn Fn(&[u8]) -> Option<u32>| {
            name.as_ref().and_then(|n| n.as_deref()).and_then(lookup)
        };
        (
            named(&item.user, &|n| self.uid(n)).or(item.uid),
            named(&item.group, &|n| self.gid(n)).or(item.gid),
        )
    }
}

/// `name:x:id:...` lines: the first and third field, in file order.
fn parse_id_db(data: &[u8]) -> Vec<(Vec<u8>, u32)> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|b| *b == b':');
            let name = fields.next()?;
            let id = std::str::from_utf8(fields.nth(1)?).ok()?.parse().ok()?;
            Some((name.to_vec(), id))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Owners {
        Owners::from_databases(
            b"root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\ntoor:x:0:0::/:/bin/sh\n",
            b"root:x:0:\nstaff:x:50:alice\n",
        )
    }

    #[test]
    fn both_directions_and_the_first_entry_wins() {
        let owners = sample();
        assert_eq!(owners.uid(b"alice"), Some(1001));
        assert_eq!(owners.uid(b"toor"), Some(0));
        assert_eq!(owners.user_name(0), Some(&b"root"[..]));
        assert_eq!(owners.group_name(50), Some(&b"staff"[..]));
        assert_eq!(owners.gid(b"staff"), Some(50));
        assert_eq!(owners.user_name(4242), None);
    }
}
