//! Which archive paths a command works on: borg's `PATH` arguments of extract and list, which
//! are path prefixes (`pp:`): `a/b` selects `a/b` and everything below it, not `a/bc`. Leading
//! and trailing slashes and `.` components do not matter. A PATH that selected nothing is worth
//! a warning (borg's "Include pattern never matched").

/// The `PATH` arguments of a command; none selects everything.
#[derive(Clone, Debug, Default)]
pub struct PathSelection {
    prefixes: Vec<Vec<Vec<u8>>>,
    matched: Vec<bool>,
    originals: Vec<String>,
}

/// An archive path split into its components, without empty and `.` ones.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

impl PathSelection {
    pub fn new(paths: &[Vec<u8>]) -> PathSelection {
        PathSelection {
            prefixes: paths
                .iter()
                .map(|p| components(p).into_iter().map(<[u8]>::to_vec).collect())
                .collect(),
            matched: vec![false; paths.len()],
            originals: paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether the path with these components is selected; remembers which PATHs matched.
    pub fn selects(&mut self, path: &[&[u8]]) -> bool {
        if self.prefixes.is_empty() {
            return true;
        }
        let mut any = false;
        for (prefix, matched) in self.prefixes.iter().zip(&mut self.matched) {
            if path.len() >= prefix.len()
                && path.iter().zip(prefix).all(|(a, b)| *a == b.as_slice())
            {
                *matched = true;
                any = true;
            }
        }
        any
    }

    /// borg's warning for each PATH that selected nothing.
    pub fn unmatched_warnings(&self) -> Vec<String> {
        self.originals
            .iter()
            .zip(&self.matched)
            .filter(|(_, matched)| !**matched)
            .map(|(path, _)| format!("Include pattern '{path}' never matched."))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_whole_components() {
        let mut selection = PathSelection::new(&[b"/a/b/".to_vec(), b"x".to_vec()]);
        assert!(selection.selects(&components(b"a/b")));
        assert!(selection.selects(&components(b"./a/b/c")));
        assert!(!selection.selects(&components(b"a/bc")));
        assert!(!selection.selects(&components(b"a")));
        assert_eq!(
            selection.unmatched_warnings(),
            vec!["Include pattern 'x' never matched."]
        );
        assert!(PathSelection::new(&[]).selects(&components(b"anything")));
    }
}
