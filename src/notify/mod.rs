//! Telling someone how a run went: healthchecks pings, Uptime Kuma pushes, ntfy messages, a
//! webhook, mail — `[notify]` in the config ([`config`]).
//!
//! A notification is the least important thing a run does, so it is built to never get in the
//! way of the rest:
//! - **Best effort.** A call that fails or times out is one warning line on stderr; it never
//!   changes the run's outcome or exit code. There is no retry: the next run notifies again, and
//!   a dead man's switch (healthchecks, Uptime Kuma) notices the silence by itself.
//! - **Bounded in time.** Every call of an event runs at once, each given up after `timeout`;
//!   the start event is sent beside the run, so a dead endpoint delays a run by at most one
//!   timeout at its end (plus what is left of the start's, when the run is shorter).
//! - **Quiet about secrets.** A URL's path and query often are the token (healthchecks' UUID,
//!   a Kuma push token); warnings name a target by kind, scheme and host only. Tokens and
//!   passwords are read from files when sent, and go only where they are meant to.
//! - **Bounded in what it reads.** An answer's status line and headers, then at most
//!   [`http_client::MAX_ANSWER_BYTES`] of its body; an SMTP reply's lines are capped the same way.
//!
//! This layer knows nothing of backups: the command line writes the [`Message`] (its title,
//! text and JSON summary) and says which [`Event`] it is; each kind shapes it for its service.

pub mod config;
mod http_client;
mod smtp;
mod tls;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use config::NotifyConfig;
use config::{Kind, Target};

/// What a notification tells of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Start,
    Success,
    Warning,
    Failure,
}

impl Event {
    /// The event of a run that ended with borg's `exit_code`: 0 success, 1 warning, anything
    /// else (an error, pruning failed after the archive, a signal) a failure someone must see.
    pub fn of_exit_code(exit_code: i32) -> Event {
        match exit_code {
            0 => Event::Success,
            1 => Event::Warning,
            _ => Event::Failure,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Warning => "warning",
            Event::Failure => "failure",
        }
    }
}

/// One notification, written by the command that ran.
#[derive(Clone, Debug)]
pub struct Message {
    pub event: Event,
    /// One line: what ran, where, and how it went.
    pub title: String,
    /// Plain text of a few lines: figures, the error and what to do.
    pub text: String,
    /// The run's last lines on stderr (the body of a healthchecks ping, the end of a mail).
    pub log: Vec<String>,
    /// The JSON summary a webhook receives.
    pub summary: serde_json::Value,
    /// How long the run took (Uptime Kuma's `ping`); `None` at the start.
    pub duration: Option<Duration>,
    /// This host's name (a mail's default sender and its EHLO).
    pub hostname: String,
}

/// Sends a run's notifications: the start beside the run, the end when it is over.
pub struct Notifier {
    config: Arc<NotifyConfig>,
    started: Option<JoinHandle<()>>,
}

impl Notifier {
    pub fn new(config: NotifyConfig) -> Notifier {
        Notifier {
            config: Arc::new(config),
            started: None,
        }
    }

    /// Sends `message` (a start) on a thread of its own, so the run goes on at once.
    pub fn start(&mut self, message: Message) {
        let config = self.config.clone();
        self.started = Some(std::thread::spawn(move || send_all(&config, &message)));
    }

    /// Sends `message` (how the run ended) once the start was sent, and returns when every
    /// call has answered or timed out.
    pub fn finish(mut self, message: Message) {
        if let Some(started) = self.started.take() {
            let _ = started.join();
        }
        send_all(&self.config, &message);
    }
}

/// Every target that wants `message`'s event, at once; a warning for each that failed.
fn send_all(config: &NotifyConfig, message: &Message) {
    let targets: Vec<&Target> = config
        .targets
        .iter()
        .filter(|t| t.events.contains(&message.event))
        .collect();
    if targets.is_empty() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            warn(&format!("cannot send notifications: {e}"));
            return;
        }
    };
    runtime.block_on(async {
        // The roots are read once, and only when a target needs TLS.
        let tls = std::sync::OnceLock::new();
        let calls = targets.iter().map(|target| {
            let tls = &tls;
            async move {
                let call = send(config, target, message, tls);
                let outcome = match tokio::time::timeout(config.timeout, call).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "no answer within {} s (notify.timeout)",
                        config.timeout.as_secs()
                    )),
                };
                if let Err(why) = outcome {
                    warn(&format!(
                        "{} ({}) failed: {why}; the run's outcome stands",
                        target.kind.describe(),
                        message.event.name()
                    ));
                }
            }
        });
        futures_util::future::join_all(calls).await;
    });
}

fn warn(line: &str) {
    crate::stderr::write(format!("mailcow-borg: warning: {line}\n").as_bytes());
}

/// The TLS settings of this run's calls, made on first use.
type LazyTls = std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>;

fn tls_config<'a>(
    config: &NotifyConfig,
    lazy: &'a LazyTls,
) -> Result<&'a Arc<rustls::ClientConfig>, String> {
    lazy.get_or_init(|| tls::client_config(config.ca_file.as_deref()))
        .as_ref()
        .map_err(Clone::clone)
}

async fn send(
    config: &NotifyConfig,
    target: &Target,
    message: &Message,
    lazy: &LazyTls,
) -> Result<(), String> {
    let tls = || tls_config(config, lazy).cloned();
    let request = match &target.kind {
        Kind::Mail(mail) => return smtp::send(mail, message, tls).await,
        Kind::Healthchecks { url } => healthchecks(url, message)?,
        Kind::UptimeKuma { url } => uptime_kuma(url, message)?,
        Kind::Ntfy(ntfy) => ntfy_message(ntfy, message)?,
        Kind::Webhook { url, token_file } => {
            let body = serde_json::to_vec(&message.summary).map_err(|e| e.to_string())?;
            let mut request = http_client::Request::post(url.clone(), "application/json", body);
            if let Some(file) = token_file {
                request.bearer(file)?;
            }
            request
        }
    };
    http_client::send(request, tls).await
}

/// healthchecks: `/start`, the URL itself (a warning too: it has no warning state), `/fail`;
/// the log lines become the ping's body, which its web page shows.
fn healthchecks(url: &http::Uri, message: &Message) -> Result<http_client::Request, String> {
    let suffix = match message.event {
        Event::Start => "/start",
        Event::Success | Event::Warning => "",
        Event::Failure => "/fail",
    };
    let body = if message.event == Event::Start {
        Vec::new()
    } else {
        format!("{}\n", message.log.join("\n")).into_bytes()
    };
    Ok(http_client::Request::post(
        http_client::with_path_suffix(url, suffix)?,
        "text/plain; charset=utf-8",
        body,
    ))
}

/// Uptime Kuma's push URL carries its own status/msg/ping as copied from its page; ours
/// replace them.
fn uptime_kuma(url: &http::Uri, message: &Message) -> Result<http_client::Request, String> {
    let status = if message.event == Event::Failure {
        "down"
    } else {
        "up"
    };
    let ping = message
        .duration
        .map(|d| d.as_millis().to_string())
        .unwrap_or_default();
    let query = [
        ("status", status),
        ("msg", message.title.as_str()),
        ("ping", ping.as_str()),
    ];
    Ok(http_client::Request::get(http_client::with_query(
        url, &query,
    )?))
}

/// ntfy: the text as the message, with a title, a priority and tags by event.
fn ntfy_message(ntfy: &config::Ntfy, message: &Message) -> Result<http_client::Request, String> {
    let priority = ntfy.priority.unwrap_or(match message.event {
        Event::Start => 1,
        Event::Success => 2,
        Event::Warning => 3,
        Event::Failure => 4,
    });
    let mut tags = vec![
        match message.event {
            Event::Start => "arrow_forward",
            Event::Success => "white_check_mark",
            Event::Warning => "warning",
            Event::Failure => "rotating_light",
        }
        .to_string(),
    ];
    tags.extend(ntfy.tags.iter().cloned());
    let mut request = http_client::Request::post(
        ntfy.url.clone(),
        "text/plain; charset=utf-8",
        message.text.clone().into_bytes(),
    );
    request.header("Title", &http_client::header_text(&message.title))?;
    request.header("Priority", &priority.to_string())?;
    request.header("Tags", &tags.join(","))?;
    if let Some(file) = &ntfy.token_file {
        request.bearer(file)?;
    }
    Ok(request)
}
