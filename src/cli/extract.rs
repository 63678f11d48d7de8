//! `mailcow-borg extract REPO::ARCHIVE [PATH...]`: restore into the current directory, like
//! `borg extract`.

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, runtime, with_repository};
use crate::format::manifest::Operation;
use crate::ops::extract::ExtractOptions;
use crate::ops::select::PathSelection;

#[derive(Args)]
pub struct ExtractArgs {
    /// REPOSITORY::ARCHIVE (the repository may come from BORG_REPO: `::ARCHIVE`).
    location: String,
    /// Only items at or below these archive paths.
    paths: Vec<String>,
    /// Read, decrypt and verify everything, write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Remove this many leading path components.
    #[arg(long, default_value_t = 0, value_name = "N")]
    strip_components: usize,
    /// Restore owners by number only, not by name.
    #[arg(long)]
    numeric_ids: bool,
    /// Leave holes where the data is all zeros.
    #[arg(long)]
    sparse: bool,
    #[command(flatten)]
    access: AccessArgs,
}

pub fn run(args: ExtractArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(Some(&args.location))?;
    let Some(name) = location.archive.clone() else {
        anyhow::bail!("{}: no archive given (REPOSITORY::ARCHIVE)", args.location);
    };
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Bad patterns are reported before anything is contacted.
    PathSelection::new(&paths)?;
    let extract_options = ExtractOptions {
        destination: std::env::current_dir()?,
        paths,
        strip_components: args.strip_components,
        numeric_ids: args.numeric_ids,
        dry_run: args.dry_run,
        sparse: args.sparse,
        ..Default::default()
    };
    let stats = runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Read,
        async |repo| {
            let archive = repo.archive(&name).await?;
            let mut stats = repo.extract(&archive, &extract_options).await?;
            stats.warnings.extend(archive.tam_warning());
            anyhow::Ok(stats)
        },
    ))?;
    Ok(Outcome::after_warnings(&stats.warnings))
}
