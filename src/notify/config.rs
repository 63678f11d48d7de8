//! `[notify]` in the config file: where a run's outcome is told, checked once when the file is
//! read. A URL is never part of an error message: it may hold a token.
//!
//! ```toml
//! [notify]
//! timeout = 10                          # seconds per call (default 10)
//! ca_file = "/etc/mailcow-borg/ca.pem"  # more roots for HTTPS and SMTP, beside the system's
//!
//! [notify.healthchecks]                 # events: start, success, warning, failure (all by default)
//! url = "https://hc-ping.com/0a1b2c3d-…"
//!
//! [notify.uptime_kuma]                  # success, warning, failure
//! url = "https://kuma.example.com/api/push/Ab12Cd34"
//!
//! [[notify.ntfy]]                       # warning, failure by default
//! url = "https://ntfy.sh/my-mailcow-backups"
//! priority = "high"                     # else by event: failure high, warning default, …
//! tags = ["mailcow"]
//! token_file = "/etc/mailcow-borg/ntfy-token"
//!
//! [notify.webhook]                      # all events by default; POSTs the run's JSON summary
//! url = "https://example.com/hooks/backup"
//! token_file = "/etc/mailcow-borg/webhook-token"   # sent as `Authorization: Bearer …`
//!
//! [notify.mail]                         # warning, failure by default
//! to = ["admin@example.com"]
//! from = "mailcow-borg@mail.example.com"  # default: mailcow-borg@<hostname>
//! host = "127.0.0.1"                    # default: the mailcow's own postfix on this host
//! port = 25
//! tls = "none"                          # none, starttls, tls; default by host and port
//! user = "backup@example.com"
//! password_file = "/etc/mailcow-borg/smtp-password"
//! ```
//!
//! Every kind may be one table or several (`[[notify.ntfy]]`), each with its own `events`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::Event;

/// A call that takes longer is given up (the run is delayed by at most this per event).
pub const DEFAULT_TIMEOUT: u64 = 10;
const MAX_TIMEOUT: u64 = 300;

/// `[notify]` checked.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub targets: Vec<Target>,
}

/// One place a run's outcome is told, and for which events.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Healthchecks {
        url: Uri,
    },
    UptimeKuma {
        url: Uri,
    },
    Ntfy(Ntfy),
    Webhook {
        url: Uri,
        token_file: Option<PathBuf>,
    },
    Mail(Mail),
}

#[derive(Clone, Debug)]
pub struct Ntfy {
    pub url: Uri,
    /// 1 (min) to 5 (max); `None`: by event.
    pub priority: Option<u8>,
    pub tags: Vec<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    /// `None`: `mailcow-borg@<hostname>`.
    pub from: Option<String>,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub login: Option<(String, PathBuf)>,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    None,
    Starttls,
    Tls,
}

/// The mailcow's own postfix, as seen from its host.
const DEFAULT_MAIL_HOST: &str = "127.0.0.1";

impl Kind {
    /// What the target is, for a warning: its kind and where, without path or query (which
    /// may hold a token).
    pub fn describe(&self) -> String {
        let place = |url: &Uri| {
            format!(
                "{}://{}/…",
                url.scheme_str().unwrap_or("?"),
                url.host().unwrap_or("?")
            )
        };
        match self {
            Kind::Healthchecks { url } => format!("the healthchecks ping to {}", place(url)),
            Kind::UptimeKuma { url } => format!("the Uptime Kuma push to {}", place(url)),
            Kind::Ntfy(ntfy) => format!("the ntfy message to {}", place(&ntfy.url)),
            Kind::Webhook { url, .. } => format!("the webhook {}", place(url)),
            Kind::Mail(mail) => mail.describe(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Healthchecks { .. } => "healthchecks",
            Kind::UptimeKuma { .. } => "uptime_kuma",
            Kind::Ntfy(_) => "ntfy",
            Kind::Webhook { .. } => "webhook",
            Kind::Mail(_) => "mail",
        }
    }
}

impl NotifyConfig {
    /// One line per target: what and where (no secrets), and for which events.
    pub fn lines(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|target| {
                let events: Vec<&str> = target.events.iter().map(|e| e.name()).collect();
                let what = match &target.kind {
                    Kind::Mail(mail) => format!("{} to {}", mail_route(mail), mail.to.join(", ")),
                    kind => kind.describe(),
                };
                format!("{what} ({})", events.join(", "))
            })
            .collect()
    }

    /// Reads every file the targets need — tokens, passwords, `ca_file` and the system's
    /// roots when TLS is used — as a run would; the first that cannot be used.
    pub fn check_files(&self) -> Result<(), String> {
        let mut tls = false;
        for target in &self.targets {
            let secret = match &target.kind {
                Kind::Ntfy(Ntfy {
                    token_file, url, ..
                })
                | Kind::Webhook { token_file, url } => {
                    tls |= url.scheme_str() == Some("https");
                    token_file.as_deref()
                }
                Kind::Healthchecks { url } | Kind::UptimeKuma { url } => {
                    tls |= url.scheme_str() == Some("https");
                    None
                }
                Kind::Mail(mail) => {
                    tls |= mail.security != Security::None;
                    mail.login.as_ref().map(|(_, file)| file.as_path())
                }
            };
            if let Some(file) = secret {
                super::http_client::read_secret(file)?;
            }
        }
        if tls || self.ca_file.is_some() {
            super::tls::client_config(self.ca_file.as_deref())?;
        }
        Ok(())
    }
}

/// `the mail through HOST:PORT (starttls)`.
fn mail_route(mail: &Mail) -> String {
    let security = match mail.security {
        Security::None => "plain",
        Security::Starttls => "STARTTLS",
        Security::Tls => "TLS",
    };
    format!("{} ({security})", mail.describe())
}

impl Mail {
    fn describe(&self) -> String {
        format!("the mail through {}:{}", self.host, self.port)
    }
}

/// `[notify]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTable {
    timeout: Option<u64>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    healthchecks: OneOrMany<UrlTable>,
    #[serde(default)]
    uptime_kuma: OneOrMany<UrlTable>,
    #[serde(default)]
    ntfy: OneOrMany<NtfyTable>,
    #[serde(default)]
    webhook: OneOrMany<WebhookTable>,
    #[serde(default)]
    mail: OneOrMany<MailTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlTable {
    url: String,
    events: Option<Vec<Event>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NtfyTable {
    url: String,
    events: Option<Vec<Event>>,
    priority: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookTable {
    url: String,
    events: Option<Vec<Event>>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailTable {
    to: Vec<String>,
    from: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<Security>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    events: Option<Vec<Event>>,
}

/// A table, or an array of them.
#[derive(Debug)]
struct OneOrMany<T>(Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl NotifyTable {
    /// The table checked; the message names the key, never a URL's text.
    pub fn checked(self) -> Result<NotifyConfig, String> {
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(1..=MAX_TIMEOUT).contains(&timeout) {
            return Err(format!(
                "notify: timeout: {timeout} s; give 1 to {MAX_TIMEOUT} seconds"
            ));
        }
        let all = [Event::Start, Event::Success, Event::Warning, Event::Failure];
        let ends = [Event::Success, Event::Warning, Event::Failure];
        let trouble = [Event::Warning, Event::Failure];
        let mut targets = Vec::new();
        let mut add = |kind: Kind, events: Option<Vec<Event>>, default: &[Event]| {
            let key = format!("notify.{}", kind.name());
            let events = events.unwrap_or_else(|| default.to_vec());
            if matches!(kind, Kind::UptimeKuma { .. }) && events.contains(&Event::Start) {
                return Err(format!(
                    "{key}: events: Uptime Kuma has no start ping; give success, warning, failure"
                ));
            }
            targets.push(Target { kind, events });
            Ok(())
        };
        for table in self.healthchecks.0 {
            add(
                Kind::Healthchecks {
                    url: url("healthchecks", &table.url)?,
                },
                table.events,
                &all,
            )?;
        }
        for table in self.uptime_kuma.0 {
            add(
                Kind::UptimeKuma {
                    url: url("uptime_kuma", &table.url)?,
                },
                table.events,
                &ends,
            )?;
        }
        for table in self.ntfy.0 {
            let priority = table.priority.as_deref().map(ntfy_priority).transpose()?;
            if let Some(tag) = table
                .tags
                .iter()
                .find(|t| t.is_empty() || t.contains([',', '\r', '\n']))
            {
                return Err(format!(
                    "notify.ntfy: tags: {tag:?} is not a tag: no commas or line breaks"
                ));
            }
            let ntfy = Ntfy {
                url: url("ntfy", &table.url)?,
                priority,
                tags: table.tags,
                token_file: table.token_file,
            };
            add(Kind::Ntfy(ntfy), table.events, &trouble)?;
        }
        for table in self.webhook.0 {
            let kind = Kind::Webhook {
                url: url("webhook", &table.url)?,
                token_file: table.token_file,
            };
            add(kind, table.events, &all)?;
        }
        for table in self.mail.0 {
            let events = table.events.clone();
            add(Kind::Mail(table.checked()?), events, &trouble)?;
        }
        Ok(NotifyConfig {
            timeout: Duration::from_secs(timeout),
            ca_file: self.ca_file,
            targets,
        })
    }
}

impl MailTable {
    fn checked(self) -> Result<Mail, String> {
        if self.to.is_empty() {
            return Err("notify.mail: to: no address; give at least one".into());
        }
        for address in self.to.iter().chain(&self.from) {
            if !is_address(address) {
                return Err(format!(
                    "notify.mail: {address:?} is not a mail address (local@domain)"
                ));
            }
        }
        let host = self.host.unwrap_or_else(|| DEFAULT_MAIL_HOST.into());
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("notify.mail: host: not a host name".into());
        }
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let security = self.tls.unwrap_or(match self.port {
            Some(465) => Security::Tls,
            _ if loopback => Security::None,
            _ => Security::Starttls,
        });
        let port = self
            .port
            .unwrap_or(if security == Security::Tls { 465 } else { 25 });
        let login = match (self.user, self.password_file) {
            (Some(user), Some(file)) => Some((user, file)),
            (None, None) => None,
            _ => {
                return Err(
                    "notify.mail: user and password_file go together; give both or neither".into(),
                );
            }
        };
        if login.is_some() && security == Security::None && !loopback {
            return Err("notify.mail: a password would cross the network unencrypted; set tls = \"starttls\" or \"tls\"".into());
        }
        Ok(Mail {
            to: self.to,
            from: self.from,
            host,
            port,
            security,
            login,
        })
    }
}

/// An address as SMTP takes it between `<` `>`: one `@`, no spaces, brackets or line breaks.
pub fn is_address(text: &str) -> bool {
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c);
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.contains(forbidden)
        }
        None => false,
    }
}

fn url(key: &str, text: &str) -> Result<Uri, String> {
    let invalid = |why: &str| format!("notify.{key}: url: {why}");
    let uri: Uri = text.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("give an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    Ok(uri)
}

/// ntfy's priorities by number or name.
fn ntfy_priority(text: &str) -> Result<u8, String> {
    let names = ["min", "low", "default", "high", "urgent"];
    match text {
        "1" | "2" | "3" | "4" | "5" => Ok(text.as_bytes()[0] - b'0'),
        "max" => Ok(5),
        _ => names
            .iter()
            .position(|n| *n == text)
            .map(|i| i as u8 + 1)
            .ok_or_else(|| {
                format!(
                    "notify.ntfy: priority: {text:?}; give 1-5 or min, low, default, high, urgent"
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> Result<NotifyConfig, String> {
        toml::from_str::<NotifyTable>(text)
            .map_err(|e| e.message().to_string())?
            .checked()
    }

    #[test]
    fn every_kind_parses_as_one_table_or_many_with_defaults_by_kind() {
        let config = checked(
            r#"
            timeout = 5
            [healthchecks]
            url = "https://hc-ping.com/abc"
            [uptime_kuma]
            url = "http://kuma:3001/api/push/x?status=up&msg=OK&ping="
            [[ntfy]]
            url = "https://ntfy.sh/topic"
            priority = "urgent"
            events = ["failure"]
            [[ntfy]]
            url = "https://ntfy.sh/other"
            [webhook]
            url = "https://example.com/hook"
            [mail]
            to = ["admin@example.com"]
            "#,
        )
        .unwrap();
        assert_eq!(config.timeout, Duration::from_secs(5));
        let events: Vec<_> = config.targets.iter().map(|t| t.events.len()).collect();
        assert_eq!(events, [4, 3, 1, 2, 4, 2]);
        match &config.targets[2].kind {
            Kind::Ntfy(ntfy) => assert_eq!(ntfy.priority, Some(5)),
            other => panic!("{other:?}"),
        }
        match &config.targets[5].kind {
            Kind::Mail(mail) => {
                assert_eq!(
                    (mail.host.as_str(), mail.port, mail.security),
                    ("127.0.0.1", 25, Security::None)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            config.targets[0].kind.describe(),
            "the healthchecks ping to https://hc-ping.com/…"
        );
    }

    #[test]
    fn mail_security_follows_host_and_port() {
        let mail = |extra: &str| -> Result<(u16, Security), String> {
            let config = checked(&format!("[mail]\nto = [\"a@b.c\"]\n{extra}"))?;
            match config.targets.into_iter().next().unwrap().kind {
                Kind::Mail(mail) => Ok((mail.port, mail.security)),
                _ => unreachable!(),
            }
        };
        assert_eq!(
            mail("host = \"smtp.example.com\""),
            Ok((25, Security::Starttls))
        );
        assert_eq!(
            mail("host = \"smtp.example.com\"\nport = 465"),
            Ok((465, Security::Tls))
        );
        assert_eq!(
            mail("host = \"smtp.example.com\"\ntls = \"tls\""),
            Ok((465, Security::Tls))
        );
        let refused = mail(
            "host = \"smtp.example.com\"\ntls = \"none\"\nuser = \"u\"\npassword_file = \"/p\"",
        )
        .unwrap_err();
        assert!(refused.contains("unencrypted"), "{refused}");
        assert!(mail("user = \"u\"").unwrap_err().contains("go together"));
    }

    #[test]
    fn mistakes_are_named_without_the_url() {
        let secret = "https://hc-ping.com/secret-token";
        for (text, expected) in [
            (
                "[healthchecks]\nurl = \"ftp://x/secret-token\"",
                "notify.healthchecks: url: give an http",
            ),
            (
                "[webhook]\nurl = \"not a url secret-token\"",
                "notify.webhook: url: not a URL",
            ),
            (
                "[uptime_kuma]\nurl = \"https://k/secret-token\"\nevents = [\"start\"]",
                "Uptime Kuma has no start",
            ),
            (
                "[ntfy]\nurl = \"https://n/t\"\npriority = \"loud\"",
                "notify.ntfy: priority",
            ),
            ("[mail]\nto = []", "notify.mail: to: no address"),
            ("[mail]\nto = [\"x\"]", "not a mail address"),
            (
                "[mail]\nto = [\"a@b\\r\\nRCPT TO:<c@d>\"]",
                "not a mail address",
            ),
            ("timeout = 0", "notify: timeout"),
            (
                &format!("[healthchecks]\nurl = \"{secret}\"\nevents = [\"sometimes\"]"),
                "unknown variant",
            ),
            (
                "[healthchecks]\nurl = \"https://x/y\"\nurll = 1",
                "unknown field",
            ),
        ] {
            let error = checked(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("secret-token"), "{error}");
        }
    }
}
