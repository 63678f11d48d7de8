//! The database, as a logical dump made inside mysql-mailcow and streamed to the helper.
//!
//! `mariadb-dump` (or `mysqldump`, where the image has only that name) runs through `docker
//! exec` with `--single-transaction` (a consistent snapshot without locking mailcow out) and
//! utf8mb4. It connects over the container's own socket as `DBUSER`; the password reaches it as
//! an option file on its stdin (`--defaults-extra-file=/dev/stdin`), never as an argument or an
//! environment variable. `--skip-ssl`, because recent MariaDB clients insist on TLS, which
//! mailcow's server does not offer (mailcow #6586).

use crate::docker::discover::Container;
use crate::docker::exec::ExecStream;
use crate::docker::{DockerError, Engine};

use super::conf::MailcowConf;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{container} has neither mariadb-dump nor mysqldump")]
    NoDumpTool { container: String },
}

/// The dump tools, in the order tried.
const TOOLS: [&str; 2] = ["mariadb-dump", "mysqldump"];

/// The dump tool the container has.
pub async fn dump_tool(engine: &Engine, container: &Container) -> Result<&'static str, DumpError> {
    for tool in TOOLS {
        let (_, finished) = engine
            .exec_capture(&container.id, &[tool, "--version"], b"")
            .await?;
        if finished.exit_code == 0 {
            return Ok(tool);
        }
    }
    Err(DumpError::NoDumpTool {
        container: container.name.clone(),
    })
}

/// Starts the dump of `DBNAME`; its stdout is the SQL.
pub async fn start_dump(
    engine: &Engine,
    container: &Container,
    tool: &str,
    conf: &MailcowConf,
) -> Result<ExecStream, DumpError> {
    let user = format!("--user={}", conf.db_user);
    let command = [
        tool,
        // Must come first: the client reads its option files before anything else.
        "--defaults-extra-file=/dev/stdin",
        &user,
        "--skip-ssl",
        "--single-transaction",
        "--default-character-set=utf8mb4",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--add-drop-database",
        "--databases",
        &conf.db_name,
    ];
    let options = format!(
        "[client]\npassword={}\n",
        super::double_quoted(&conf.db_pass)
    );
    Ok(engine
        .exec_stream(&container.id, &command, options.as_bytes())
        .await?)
}
