//! Unlocking the repository key while the connection is still being made.
//!
//! A borg key blob is opened with a key-encryption key: 100,000 rounds of PBKDF2 over the
//! passphrase and the blob's salt (~10 ms). Done the plain way, those rounds start only when
//! the blob has arrived — after SSH, `borg serve`'s start-up and the first requests — and every
//! command waits for them. Yet they depend only on the passphrase, the salt and the round count,
//! and the last two change only with `borg key change-passphrase`. So after an unlock the salt
//! and count are remembered per repository location (not a secret: without the blob, which is
//! not kept, they open nothing), and the next command derives the key-encryption key from them
//! on another thread while it connects. When the blob turns out to have another salt, that work
//! is thrown away and the key is unlocked the plain way.
//!
//! For such a location the passphrase is read at the start (it is needed anyway: its key was
//! encrypted last time), and read only once, also when the guess was wrong: a passphrase from
//! `BORG_PASSPHRASE_FD` cannot be read twice, and `BORG_PASSCOMMAND` should not run twice.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::format::key::{EncryptedKey, Kek, KeyMaterial, hex, parse_hex};

use super::open::OpenError;
use super::passphrase::{PassphraseError, PassphraseSources};

/// A guess at the blob's salt and round count, with the key-encryption key being derived.
struct Guess {
    salt: Vec<u8>,
    iterations: u32,
    kek: tokio::task::JoinHandle<Kek>,
}

pub struct UnlockAhead {
    /// Where this location's salt and round count are remembered; `None`: nowhere.
    memo: Option<PathBuf>,
    /// The passphrase, if it was read ahead.
    passphrase: Option<Result<String, PassphraseError>>,
    guess: Option<Guess>,
}

impl UnlockAhead {
    /// Starts deriving, if `memo_dir` remembers a salt for `location`. Call within the runtime.
    pub fn start(memo_dir: Option<&Path>, location: &str, sources: &PassphraseSources) -> Self {
        let memo = memo_dir.map(|dir| dir.join(hex(&Sha256::digest(location.as_bytes()))));
        let remembered = memo
            .as_deref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| parse_memo(&text));
        let Some((salt, iterations)) = remembered else {
            return UnlockAhead {
                memo,
                passphrase: None,
                guess: None,
            };
        };
        let passphrase = sources.read();
        let guess = passphrase.as_ref().ok().map(|passphrase| {
            let (passphrase, derive_salt) = (passphrase.clone(), salt.clone());
            Guess {
                salt,
                iterations,
                kek: tokio::task::spawn_blocking(move || {
                    Kek::derive(passphrase.as_bytes(), &derive_salt, iterations)
                }),
            }
        });
        UnlockAhead {
            memo,
            passphrase: Some(passphrase),
            guess,
        }
    }

    /// Opens `encrypted` with the passphrase from `sources` (the empty one when none is given,
    /// as borg tries it), using the key-encryption key derived ahead when its salt was right.
    pub async fn open(
        mut self,
        encrypted: &EncryptedKey,
        sources: &PassphraseSources,
    ) -> Result<KeyMaterial, OpenError> {
        let passphrase = match self.passphrase.take().unwrap_or_else(|| sources.read()) {
            Ok(passphrase) => passphrase,
            Err(PassphraseError::Missing) => {
                return encrypted
                    .open(b"")
                    .map_err(|_| PassphraseError::Missing.into());
            }
            Err(e) => return Err(e.into()),
        };
        let guessed = match self.guess.take() {
            Some(guess)
                if guess.salt == encrypted.salt && guess.iterations == encrypted.iterations =>
            {
                guess.kek.await.ok()
            }
            _ => None,
        };
        let material = match guessed {
            Some(kek) => encrypted.open_with(&kek),
            None => {
                let material = encrypted.open(passphrase.as_bytes());
                if material.is_ok() {
                    self.remember(encrypted);
                }
                material
            }
        };
        material.map_err(OpenError::Key)
    }

    /// Failing to write costs the next run ~10 ms, nothing else: the error is not reported.
    fn remember(&self, encrypted: &EncryptedKey) {
        let Some(path) = &self.memo else { return };
        let text = format!("{} {}\n", encrypted.iterations, hex(&encrypted.salt));
        let tmp = path.with_extension("tmp");
        let _ = path
            .parent()
            .map_or(Ok(()), super::durable::create_private_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
    }
}

fn parse_memo(text: &str) -> Option<(Vec<u8>, u32)> {
    let (iterations, salt) = text.trim_end().split_once(' ')?;
    Some((parse_hex(salt)?, iterations.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_is_read_back_and_anything_else_is_no_memo() {
        assert_eq!(
            parse_memo("100000 00ff10\n"),
            Some((vec![0x00, 0xff, 0x10], 100_000))
        );
        for bad in ["", "100000", "x 00ff", "100000 0g", "100000 0"] {
            assert_eq!(parse_memo(bad), None, "{bad:?}");
        }
    }
}
