//! The database's tools in mysql-mailcow: a logical dump made there and streamed to the helper
//! — and back: SQL streamed into the `mariadb` client there (how a restore uses it is
//! [`super::staged_import`]'s).
//!
//! `mariadb-dump` (or `mysqldump`, where the image has only that name) runs through `docker
//! exec` with `--single-transaction` (a consistent snapshot without locking mailcow out) and
//! utf8mb4. It connects over the container's own socket as `DBUSER` (a restore: as root, with
//! `DBROOT`); the password reaches it as an option file on its stdin
//! (`--defaults-extra-file=/dev/stdin`), never as an argument or an environment variable. `--skip-ssl`, because recent MariaDB clients insist on TLS, which
//! mailcow's server does not offer (mailcow #6586).

use crate::docker::discover::Container;
use crate::docker::exec::{ExecStream, Finished, Input};
use crate::docker::{DockerError, Engine};

use super::conf::MailcowConf;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{container} has none of {tools}")]
    NoTool { container: String, tools: String },
    #[error(
        "{container} refuses {user} with {keys} from mailcow.conf: {message}; correct {keys} in mailcow.conf (they must be what mailcow was installed with)"
    )]
    Login {
        container: String,
        user: String,
        keys: &'static str,
        message: String,
    },
}

/// Who a client logs in as, from mailcow.conf.
#[derive(Clone, Copy)]
pub struct Login<'c> {
    user: &'c str,
    password: &'c str,
    /// The mailcow.conf keys they come from, for messages.
    keys: &'static str,
}

impl<'c> Login<'c> {
    /// mailcow's own database user, `DBUSER`: rights on `DBNAME` alone.
    pub fn mailcow(conf: &'c MailcowConf) -> Login<'c> {
        Login {
            user: &conf.db_user,
            password: &conf.db_pass,
            keys: "DBUSER/DBPASS",
        }
    }

    /// The server's root, `DBROOT`: the staged restore creates and drops databases.
    pub fn root(conf: &'c MailcowConf) -> Login<'c> {
        Login {
            user: "root",
            password: &conf.db_root,
            keys: "DBROOT",
        }
    }

    /// An option file that logs a client in: three lines.
    fn options(&self) -> String {
        format!(
            "[client]\nuser={}\npassword={}\n",
            super::double_quoted(self.user),
            super::double_quoted(self.password)
        )
    }
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

/// Checks that `login` works — before anything is stopped or dropped.
pub async fn check_login(
    engine: &Engine,
    container: &Container,
    client: &str,
    login: Login<'_>,
) -> Result<(), DumpError> {
    let (_, finished) = query(engine, container, client, login, "SELECT 1").await?;
    if finished.exit_code == 0 {
        return Ok(());
    }
    Err(DumpError::Login {
        container: container.name.clone(),
        user: login.user.to_string(),
        keys: login.keys,
        message: finished.last_error_line(),
    })
}

/// Runs one short `sql` (no secrets in it: it is an argument) as `login`; its output is
/// batch mode's, without column names: a row per line, tab-separated.
pub async fn query(
    engine: &Engine,
    container: &Container,
    client: &str,
    login: Login<'_>,
    sql: &str,
) -> Result<(Vec<u8>, Finished), DumpError> {
    let command = [
        client,
        "--defaults-extra-file=/dev/stdin",
        "--skip-ssl",
        "--default-character-set=utf8mb4",
        "--batch",
        "--skip-column-names",
        "-e",
        sql,
    ];
    Ok(engine
        .exec_capture(&container.id, &command, login.options().as_bytes())
        .await?)
}

/// Starts the client that runs SQL (a dump) as `login`; the caller writes the SQL to the
/// returned input and shuts it down. `extra` are further client options (`--force`).
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
    login: Login<'_>,
    extra: &[&str],
) -> Result<(ExecStream, Input), DumpError> {
    const SCRIPT: &str = r#"umask 077
f=$(mktemp) || exit 1
trap 'rm -f "$f"' EXIT
IFS= read -r a && IFS= read -r b && IFS= read -r c || exit 1
printf '%s\n%s\n%s\n' "$a" "$b" "$c" > "$f" || exit 1
"$0" --defaults-extra-file="$f" --skip-ssl --default-character-set=utf8mb4 --binary-mode "$@""#;
    let command = [&["sh", "-c", SCRIPT, client][..], extra].concat();
    let (stream, mut input) = engine.exec_with_input(&container.id, &command).await?;
    use tokio::io::AsyncWriteExt;
    input
        .write_all(login.options().as_bytes())
        .await
        .map_err(|e| DockerError::api(format!("starting {client} in {}", container.name), e))?;
    Ok((stream, input))
}

/// Starts the dump of `DBNAME` for a backup; its stdout is the SQL.
pub async fn start_dump(
    engine: &Engine,
    container: &Container,
    tool: &str,
    conf: &MailcowConf,
) -> Result<ExecStream, DumpError> {
    let arguments = [
        "--single-transaction",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--add-drop-database",
        "--databases",
        &conf.db_name,
    ];
    dump(engine, container, tool, Login::mailcow(conf), &arguments).await
}

/// Starts `tool` (a dump tool) with `arguments` as `login`; its stdout is the SQL.
pub async fn dump(
    engine: &Engine,
    container: &Container,
    tool: &str,
    login: Login<'_>,
    arguments: &[&str],
) -> Result<ExecStream, DumpError> {
    let user = format!("--user={}", login.user);
    let command = [
        // The option file must come first: the tool reads its option files before anything
        // else. It holds the password alone, since stdin is read once.
        &[
            tool,
            "--defaults-extra-file=/dev/stdin",
            &user,
            "--skip-ssl",
            "--default-character-set=utf8mb4",
        ][..],
        arguments,
    ]
    .concat();
    let options = format!(
        "[client]\npassword={}\n",
        super::double_quoted(login.password)
    );
    Ok(engine
        .exec_stream(&container.id, &command, options.as_bytes())
        .await?)
}
