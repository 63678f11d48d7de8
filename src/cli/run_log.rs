//! What a run leaves behind for monitoring: its record in the journal of the state dir, and,
//! when the config names a `metrics_file`, the metrics of the runs recorded. Recording never
//! changes a run's outcome: what cannot be written is a warning on stderr.

use std::path::Path;

use crate::mailcow::journal;
use crate::mailcow::metrics;
use crate::mailcow::run_record::RunRecord;
use crate::ops::durable::write_durably;

/// Records `record` (the host lock is held: one writer at a time).
pub fn record(state_dir: &Path, metrics_file: Option<&Path>, record: RunRecord) {
    let records = match journal::append(state_dir, record.clone()) {
        Ok(records) => records,
        Err(e) => {
            say!(
                "mailcow-borg: warning: cannot record this run in {}: {e}; `status` and the metrics miss it",
                journal::path(state_dir).display()
            );
            // The metrics still tell of this run, as far as it alone can.
            vec![record]
        }
    };
    if let Some(path) = metrics_file
        && let Err(e) = write_durably(path, metrics::render(&records).as_bytes())
    {
        say!(
            "mailcow-borg: warning: cannot write the metrics file {}: {e}; check metrics_file in the config",
            path.display()
        );
    }
}
