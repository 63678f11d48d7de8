//! borg's archive filters — `-a/--glob-archives`, `--first`, `--last` — for the commands that
//! act on several archives of a repository (`check`, `delete`): one set of flags, one meaning.

use clap::Args;

use crate::ops::open::OpenRepository;
use crate::ops::patterns::ArchiveGlob;

#[derive(Args, Clone, Debug, Default)]
pub struct ArchiveFilter {
    /// Only archives whose names match this shell pattern (`*`, `?`, `[...]`).
    #[arg(short = 'a', long = "glob-archives", value_name = "GLOB")]
    pub glob: Option<String>,
    /// The first N archives, oldest first.
    #[arg(long, value_name = "N", conflicts_with = "last")]
    pub first: Option<usize>,
    /// The last N archives.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

impl ArchiveFilter {
    /// Whether any filter was given (none: the command's own default applies).
    pub fn is_set(&self) -> bool {
        self.glob.is_some() || self.first.is_some() || self.last.is_some()
    }

    /// The manifest's archives the filters choose, oldest first, checkpoints included (borg's
    /// `list_considering` with `consider_checkpoints`).
    pub fn chosen(&self, repo: &OpenRepository) -> Vec<String> {
        let glob = self.glob.as_deref().map(ArchiveGlob::parse);
        let mut names: Vec<String> = repo
            .archives_by_time()
            .into_iter()
            .filter(|(name, _)| glob.as_ref().is_none_or(|g| g.matches(name)))
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
            .collect();
        if let Some(first) = self.first {
            names.truncate(first);
        } else if let Some(last) = self.last {
            names.drain(..names.len().saturating_sub(last));
        }
        names
    }
}
