//! The database, as a logical dump made inside mysql-mailcow and streamed to the helper — and
//! back: a dump streamed from the helper into the `mariadb` client in mysql-mailcow.
//!
//! `mariadb-dump` (or `mysqldump`, where the image has only that name) runs through `docker
//! exec` with `--single-transaction` (a consistent snapshot without locking mailcow out) and
//! utf8mb4. It connects over the container's own socket as `DBUSER`; the password reaches it as
//! an option file on its stdin (`--defaults-extra-file=/dev/stdin`), never as an argument or an
//! environment variable. `--skip-ssl`, because recent MariaDB clients insist on TLS, which
//! mailcow's server does not offer (mailcow #6586).

use crate::docker::discover::Container;
use crate::docker::exec::{ExecStream, Input};
use crate::docker::{DockerError, Engine};

use super::conf::MailcowConf;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{container} has none of {tools}")]
    NoTool { container: String, tools: String },
    #[error(
        "{container} refuses DBUSER {user} with DBPASS from mailcow.conf: {message}; the restore needs mailcow.conf's database user to log in: correct DBUSER/DBPASS in mailcow.conf (they must be what mailcow was installed with)"
    )]
    Login {
        container: String,
        user: String,
        message: String,
    },
}

/// The dump tools and the clients, in the order tried.
const DUMP_TOOLS: [&str; 2] = ["mariadb-dump", "mysqldump"];
const CLIENTS: [&str; 2] = ["mariadb", "mysql"];

/// The first of `tools` the container has.
async fn find_tool(
    engine: &Engine,
    container: &Container,
    tools: &[&'static str],
) -> Result<&'static str, DumpError> {
    for &tool in tools {
        let (_, finished) = engine
            .exec_capture(&container.id, &[tool, "--version"], b"")
            .await?;
        if finished.exit_code == 0 {
            return Ok(tool);
        }
    }
    Err(DumpError::NoTool {
        container: container.name.clone(),
        tools: tools.join(" or "),
    })
}

/// The dump tool the container has.
pub async fn dump_tool(engine: &Engine, container: &Container) -> Result<&'static str, DumpError> {
    find_tool(engine, container, &DUMP_TOOLS).await
}

/// The SQL client the container has.
pub async fn client_tool(
    engine: &Engine,
    container: &Container,
) -> Result<&'static str, DumpError> {
    find_tool(engine, container, &CLIENTS).await
}

/// An option file that logs the client in as `DBUSER`: three lines.
fn login_options(conf: &MailcowConf) -> String {
    format!(
        "[client]\nuser={}\npassword={}\n",
        super::double_quoted(&conf.db_user),
        super::double_quoted(&conf.db_pass)
    )
}

/// Checks that `DBUSER` logs in with `DBPASS` — before anything is stopped or dropped.
pub async fn check_login(
    engine: &Engine,
    container: &Container,
    client: &str,
    conf: &MailcowConf,
) -> Result<(), DumpError> {
    let command = [
        client,
        "--defaults-extra-file=/dev/stdin",
        "--skip-ssl",
        "-e",
        "SELECT 1",
    ];
    let (_, finished) = engine
        .exec_capture(&container.id, &command, login_options(conf).as_bytes())
        .await?;
    if finished.exit_code == 0 {
        return Ok(());
    }
    Err(DumpError::Login {
        container: container.name.clone(),
        user: conf.db_user.clone(),
        message: finished.last_error_line(),
    })
}

/// Starts the client that runs a dump as `DBUSER`; the caller writes the SQL to the returned
/// input and shuts it down.
///
/// The SQL takes the client's stdin, so the password cannot come as `/dev/stdin` option file
/// as for the dump: a shell reads the option file's three lines first — `read` takes a pipe
/// byte by byte, so nothing of the SQL after them is consumed — into a private temporary file
/// that is removed when the client exits. The password is never in an argument or the
/// environment.
pub async fn start_import(
    engine: &Engine,
    container: &Container,
    client: &str,
    conf: &MailcowConf,
) -> Result<(ExecStream, Input), DumpError> {
    const SCRIPT: &str = r#"umask 077
f=$(mktemp) || exit 1
trap 'rm -f "$f"' EXIT
IFS= read -r a && IFS= read -r b && IFS= read -r c || exit 1
printf '%s\n%s\n%s\n' "$a" "$b" "$c" > "$f" || exit 1
"$0" --defaults-extra-file="$f" --skip-ssl --default-character-set=utf8mb4 --binary-mode"#;
    let (stream, mut input) = engine
        .exec_with_input(&container.id, &["sh", "-c", SCRIPT, client])
        .await?;
    use tokio::io::AsyncWriteExt;
    input
        .write_all(login_options(conf).as_bytes())
        .await
        .map_err(|e| DockerError::api(format!("starting {client} in {}", container.name), e))?;
    Ok((stream, input))
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
