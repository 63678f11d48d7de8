//! Redis holds mailcow's DKIM private keys, Bayes data and settings; what is on disk
//! (`dump.rdb`) is only as fresh as the last save. So a backup first runs a blocking `SAVE`
//! inside redis-mailcow, then reads the volume.
//!
//! `redis-cli` gets its commands on stdin, `AUTH` first: the password is never an argument
//! (visible in `ps`) or an environment variable. Without a terminal, redis-cli prints each
//! reply on a line; both must be `OK`.

use std::time::Duration;

use crate::docker::discover::Container;
use crate::docker::{DockerError, Engine};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("redis SAVE in {container} failed: {detail}")]
    Failed { container: String, detail: String },
}

/// How long a `SAVE` may wait for a background save that is already running.
const BUSY_RETRIES: u32 = 120;

/// `SAVE` in `container`, authenticated with `password` (none when empty).
pub async fn save(
    engine: &Engine,
    container: &Container,
    password: &str,
) -> Result<(), RedisError> {
    let mut script = String::new();
    if !password.is_empty() {
        script.push_str(&format!("AUTH {}\n", super::double_quoted(password)));
    }
    script.push_str("SAVE\n");
    let expected = script.lines().count();
    for _ in 0..BUSY_RETRIES {
        let (stdout, finished) = engine
            .exec_capture(
                &container.id,
                &["redis-cli", "--no-auth-warning"],
                script.as_bytes(),
            )
            .await?;
        let replies = String::from_utf8_lossy(&stdout);
        let replies: Vec<&str> = replies.lines().map(str::trim).collect();
        if finished.exit_code == 0
            && replies.len() == expected
            && replies.iter().all(|r| *r == "OK")
        {
            return Ok(());
        }
        // A background save (Redis' own schedule) makes SAVE fail until it is done.
        if replies.iter().any(|r| r.contains("in progress")) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let detail = replies
            .iter()
            .find(|r| **r != "OK")
            .map(|r| r.to_string())
            .unwrap_or_else(|| match finished.last_error_line() {
                line if line.is_empty() => format!("redis-cli exited with {}", finished.exit_code),
                line => line,
            });
        return Err(RedisError::Failed {
            container: container.name.clone(),
            detail: format!("{detail} (is REDISPASS in mailcow.conf the password redis uses?)"),
        });
    }
    Err(RedisError::Failed {
        container: container.name.clone(),
        detail: "a background save kept running for a minute".into(),
    })
}
