//! `mailcow-borg init -e MODE [REPO]`: makes a new, empty repository, like `borg init`.

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, new_passphrase_env, runtime};
use super::new_passphrase::new_passphrase;
use crate::error::ErrorKind;
use crate::format::key::KeyType;
use crate::ops::init::{InitSettings, init};

/// The seven modes, as borg's `--encryption` names them.
const MODES: [&str; 7] = [
    "none",
    "authenticated",
    "authenticated-blake2",
    "repokey",
    "repokey-blake2",
    "keyfile",
    "keyfile-blake2",
];

#[derive(Args)]
pub struct InitArgs {
    /// REPOSITORY to make (default: BORG_REPO).
    location: Option<String>,
    /// Key mode: repokey or keyfile (the key in the repository or in ~/.config/borg/keys),
    /// their -blake2 variants, authenticated[-blake2] (not encrypted), or none.
    #[arg(
        short = 'e',
        long = "encryption",
        value_name = "MODE",
        required = true,
        value_parser = clap::builder::PossibleValuesParser::new(MODES)
    )]
    encryption: String,
    /// Make an append-only repository (clients can add, not delete or overwrite).
    #[arg(long)]
    append_only: bool,
    /// The repository's storage quota, e.g. 5G, 1.5T (decimal; at least 10M). Default: none.
    #[arg(long, value_name = "QUOTA")]
    storage_quota: Option<String>,
    /// Create the repository directory's missing parent directories.
    #[arg(long)]
    make_parent_dirs: bool,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaError {
    #[error("quota is too small ({0}). At least 10M are required.")]
    TooSmall(String),
    #[error("invalid --storage-quota {0:?}: expected a size such as 500M, 5G or 1.5T")]
    Invalid(String),
}

impl QuotaError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

/// Borg's `parse_storage_quota`: `parse_file_size` (a decimal number, optionally followed by
/// K, M, G, T or P for powers of 1000, truncated to whole bytes), refused below 10M unless 0
/// (which means no quota).
pub fn parse_storage_quota(text: &str) -> Result<Option<u64>, QuotaError> {
    let invalid = || QuotaError::Invalid(text.to_string());
    let (number, factor) = match text.char_indices().last() {
        Some((i, suffix)) => match "KMGTP".find(suffix) {
            Some(power) => (&text[..i], 1000f64.powi(power as i32 + 1)),
            None => (text, 1.0),
        },
        None => return Err(invalid()),
    };
    let value: f64 = number.trim().parse().map_err(|_| invalid())?;
    let bytes = (value * factor).trunc();
    if !bytes.is_finite() {
        return Err(invalid());
    }
    if bytes == 0.0 {
        return Ok(None);
    }
    if bytes < 10e6 {
        return Err(QuotaError::TooSmall(text.to_string()));
    }
    // `as` saturates; a quota beyond u64 is no quota any disk can reach.
    Ok(Some(bytes as u64))
}

/// Borg 1.4.5's advice after making an encrypted or authenticated repository, word for word.
const IMPORTANT: &str = "
IMPORTANT: you will need both KEY AND PASSPHRASE to access this repo!

Key storage location depends on the mode:
- repokey modes: key is stored in the repository directory.
- keyfile modes: key is stored in the home directory of this user.

For any mode, you should:
1. Export the borg key and store the result at a safe place:
   borg key export           REPOSITORY encrypted-key-backup
   borg key export --paper   REPOSITORY encrypted-key-backup.txt
   borg key export --qr-html REPOSITORY encrypted-key-backup.html
2. Write down the borg key passphrase and store it at safe place.
";

pub fn run(args: InitArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    let key_type = KeyType::from_mode_name(&args.encryption).expect("clap allows only modes");
    let settings = InitSettings {
        key_type,
        append_only: args.append_only,
        storage_quota: match &args.storage_quota {
            Some(text) => parse_storage_quota(text)?,
            None => None,
        },
        make_parent_dirs: args.make_parent_dirs,
    };
    // Asked before anything is made, so that a missing passphrase leaves nothing behind.
    let passphrase = if key_type == KeyType::Plaintext {
        String::new()
    } else {
        new_passphrase(new_passphrase_env(), &options.passphrase)?
    };
    runtime()?.block_on(init(&location, &options, &settings, &passphrase))?;
    if key_type != KeyType::Plaintext {
        say!("{IMPORTANT}");
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_quota_is_parsed_as_borg_parses_it() {
        assert_eq!(parse_storage_quota("10M"), Ok(Some(10_000_000)));
        assert_eq!(parse_storage_quota("1.5T"), Ok(Some(1_500_000_000_000)));
        assert_eq!(parse_storage_quota("20000000"), Ok(Some(20_000_000)));
        assert_eq!(parse_storage_quota("0"), Ok(None));
        assert_eq!(
            parse_storage_quota("5M"),
            Err(QuotaError::TooSmall("5M".into()))
        );
        assert_eq!(
            parse_storage_quota("9999999"),
            Err(QuotaError::TooSmall("9999999".into()))
        );
        for bad in ["", "G", "5X", "abc"] {
            assert_eq!(
                parse_storage_quota(bad),
                Err(QuotaError::Invalid(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_mode_is_a_key_type() {
        for mode in MODES {
            assert_eq!(KeyType::from_mode_name(mode).unwrap().mode_name(), mode);
        }
    }
}
