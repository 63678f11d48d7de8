//! `mailcow-borg break-lock [REPO]`: removes the repository's locks, like `borg break-lock`.

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, runtime};
use crate::ops::open::break_lock;

#[derive(Args)]
pub struct BreakLockArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    #[command(flatten)]
    access: AccessArgs,
}

pub fn run(args: BreakLockArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    runtime()?.block_on(break_lock(&location, &options))?;
    Ok(Outcome::Ok)
}
