//! The frame `drill` and `export` share around their scratch run (`mailcow::throwaway`): one
//! run at a time on this host, SIGINT/SIGTERM turned into a stop that removes the scratch
//! containers and volumes, progress lines timed from the start.

use super::access::runtime;
use super::backup::host_lock;
use super::signals::{self, Interrupted};
use crate::docker::Engine;
use crate::mailcow::conf::MailcowConf;
use crate::mailcow::restore::RestoreOptions;
use crate::mailcow::throwaway::Stop;

/// What a run says when a signal stops it.
pub(super) struct OnStop {
    /// As the signal arrives (`stopping; …`).
    pub stopping: &'static str,
    /// In the error line, after the signal's name: what the stopped run left.
    pub stopped: &'static str,
}

/// Runs `work` against this host's mailcow; `stopped_by` finds the signal in an error that is
/// a stop.
pub(super) fn run_scratch<T, E>(
    options: &RestoreOptions,
    on_stop: OnStop,
    stopped_by: impl Fn(&E) -> Option<&'static str>,
    work: impl AsyncFnOnce(&Engine, &MailcowConf, Stop, &(dyn Fn(&str) + Sync)) -> Result<T, E>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    // One run at a time: it also keeps another run from taking this one's scratch containers
    // for leftovers, or leftovers for its own.
    let _lock = host_lock(&options.access)?;
    let conf = MailcowConf::load(&options.mailcow_dir)?;
    runtime()?.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        signals::pass_on(stop_tx, on_stop.stopping)?;
        let engine = Engine::connect().await?;
        let started = std::time::Instant::now();
        let say = |line: &str| {
            say!(
                "mailcow-borg: [{:>5.1} s] {line}",
                started.elapsed().as_secs_f64()
            )
        };
        work(&engine, &conf, stop, &say)
            .await
            .map_err(|e| match stopped_by(&e) {
                Some(signal) => Interrupted::by(signal, on_stop.stopped).into(),
                None => anyhow::Error::from(e),
            })
    })
}
