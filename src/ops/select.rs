//! Which archive paths a command works on: borg's `PATH` arguments of extract and list. They are
//! patterns whose default style is the path prefix (`pp:`): `a/b` selects `a/b` and everything
//! below it, not `a/bc`; another style can be chosen (`sh:vmail/**/cur`). A PATH that selected
//! nothing is worth a warning (borg's "Include pattern never matched").

use super::patterns::{Pattern, PatternError, Style};

/// The `PATH` arguments of a command; none selects everything.
#[derive(Clone, Debug, Default)]
pub struct PathSelection {
    patterns: Vec<Pattern>,
    matched: Vec<bool>,
}

/// An archive path split into its components, without empty and `.` ones.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

impl PathSelection {
    pub fn new(paths: &[Vec<u8>]) -> Result<PathSelection, PatternError> {
        let patterns = paths
            .iter()
            .map(|p| Pattern::parse(&String::from_utf8_lossy(p), Style::PathPrefix))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PathSelection {
            matched: vec![false; patterns.len()],
            patterns,
        })
    }

    /// Whether the archive path is selected; remembers which PATHs matched.
    pub fn selects(&mut self, path: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let mut any = false;
        for (pattern, matched) in self.patterns.iter().zip(&mut self.matched) {
            if pattern.matches(path) {
                *matched = true;
                any = true;
            }
        }
        any
    }

    /// borg's warning for each PATH that selected nothing.
    pub fn unmatched_warnings(&self) -> Vec<String> {
        self.patterns
            .iter()
            .zip(&self.matched)
            .filter(|(_, matched)| !**matched)
            .map(|(pattern, _)| format!("Include pattern '{}' never matched.", pattern.text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_whole_components_and_other_styles_work() {
        let mut selection =
            PathSelection::new(&[b"/a/b/".to_vec(), b"x".to_vec(), b"sh:c/**/d".to_vec()]).unwrap();
        assert!(selection.selects(b"a/b"));
        assert!(selection.selects(b"a/b/c"));
        assert!(!selection.selects(b"a/bc"));
        assert!(!selection.selects(b"a"));
        assert!(selection.selects(b"c/1/2/d"));
        assert_eq!(
            selection.unmatched_warnings(),
            vec!["Include pattern 'x' never matched."]
        );
        assert!(PathSelection::new(&[]).unwrap().selects(b"anything"));
        assert!(PathSelection::new(&[b"zz:x".to_vec()]).is_err());
    }
}
