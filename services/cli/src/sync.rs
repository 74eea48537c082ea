//! `pagestream sync`: start a run; with `--wait`, follow it stage by stage until every changed
//! page is indexed (or failed), then print the run's summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;

use pagestream_events::{SyncMode, SyncStatus};
use pagestream_views::{StageCounts, SyncAccepted, SyncRunView};

use crate::SyncArgs;
use crate::api::{ApiClient, encode};
use crate::commands::write_run;
use crate::error::CliError;

const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Without a terminal, a plain progress line at most this often.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

pub async fn sync(api: &ApiClient, args: &SyncArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mode = if args.full {
        SyncMode::Full
    } else {
        SyncMode::Incremental
    };
    let accepted: SyncAccepted = api
        .call(
            Method::POST,
            &format!("/api/confluence/{}/sync", encode(&args.source)),
            &[("mode", mode.to_string())],
            None,
            "start sync",
        )
        .await?;
    if !args.wait {
        writeln!(
            out,
            "{} sync of {} queued: run {}\n  follow it with `pagestream status {}` (or pass --wait)",
            accepted.mode, accepted.source, accepted.run_id, accepted.source
        )?;
        return Ok(());
    }
    let run = wait(api, &accepted, Duration::from_secs(args.timeout_secs)).await?;
    write_run(out, &run)?;
    if run.status == SyncStatus::Failed {
        return Err(CliError::SyncFailed {
            run: run.run_id,
            source_key: accepted.source,
            reason: run.last_error.unwrap_or_else(|| "no reason given".into()),
        });
    }
    Ok(())
}

/// Polls the run until it settles, drawing its progress on stderr.
async fn wait(
    api: &ApiClient,
    accepted: &SyncAccepted,
    timeout: Duration,
) -> Result<SyncRunView, CliError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    loop {
        match api
            .run_status(&accepted.source, Some(accepted.run_id))
            .await
        {
            Ok(run) => {
                progress.show(&run);
                if run.settled() {
                    progress.finish();
                    return Ok(run);
                }
            }
            // Queued: no fetcher has picked it up yet.
            Err(CliError::Api { code, .. }) if code == "sync_run_not_found" => {
                progress.queued();
            }
            Err(error) => {
                progress.finish();
                return Err(error);
            }
        }
        if started.elapsed() >= timeout {
            progress.finish();
            return Err(CliError::WaitTimedOut {
                run: accepted.run_id,
                source_key: accepted.source.clone(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A bar per stage on a terminal; otherwise a line now and then.
struct Progress {
    bars: Option<Bars>,
    last_line: Option<Instant>,
    last_text: Option<String>,
}

struct Bars {
    /// Holds the bars' shared drawing state.
    _multi: MultiProgress,
    header: ProgressBar,
    stages: Vec<(&'static str, ProgressBar)>,
}

const STAGES: [&str; 3] = ["converted", "embedded", "indexed"];

fn stage_count(counts: &StageCounts, stage: &str) -> i64 {
    match stage {
        "converted" => counts.converted,
        "embedded" => counts.embedded,
        _ => counts.indexed,
    }
}

impl Progress {
    fn new() -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let header = multi.add(ProgressBar::new_spinner());
            header.enable_steady_tick(Duration::from_millis(120));
            let style = ProgressStyle::with_template(
                "  {prefix:>9} [{bar:40.cyan/blue}] {pos:>6}/{len:<6} {per_sec:>10}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let stages = STAGES
                .iter()
                .map(|stage| {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(style.clone());
                    bar.set_prefix(*stage);
                    (*stage, bar)
                })
                .collect();
            Bars {
                _multi: multi,
                header,
                stages,
            }
        });
        Self {
            bars,
            last_line: None,
            last_text: None,
        }
    }

    fn queued(&mut self) {
        match &self.bars {
            Some(bars) => bars.header.set_message("queued: waiting for a fetcher"),
            None => self.line("queued: waiting for a fetcher"),
        }
    }

    fn show(&mut self, run: &SyncRunView) {
        let counts = &run.counts;
        let header = format!(
            "{} {} (fetch {}): seen {}, changed {}, deleted {}, failed {}, {} Confluence requests",
            run.mode,
            run.pipeline,
            run.status,
            counts.seen,
            counts.changed,
            counts.deleted,
            counts.failed,
            run.confluence_requests
        );
        match &self.bars {
            Some(bars) => {
                bars.header.set_message(header);
                for (stage, bar) in &bars.stages {
                    bar.set_length(counts.changed.max(0) as u64);
                    bar.set_position(stage_count(counts, stage).max(0) as u64);
                }
            }
            None => {
                let stages: Vec<String> = STAGES
                    .iter()
                    .map(|stage| format!("{stage} {}", stage_count(counts, stage)))
                    .collect();
                self.line(&format!("{header}; {}", stages.join(", ")));
            }
        }
    }

    /// A line when something changed (at most every PLAIN_INTERVAL), or every half minute.
    fn line(&mut self, text: &str) {
        let unchanged = self.last_text.as_deref() == Some(text);
        let quiet = if unchanged {
            PLAIN_INTERVAL * 6
        } else {
            PLAIN_INTERVAL
        };
        if self.last_line.is_some_and(|last| last.elapsed() < quiet) {
            return;
        }
        self.last_line = Some(Instant::now());
        self.last_text = Some(text.to_owned());
        eprintln!("  {text}");
    }

    fn finish(&mut self) {
        // The bars stay on screen, above the summary.
        if let Some(bars) = self.bars.take() {
            bars.header.finish();
            for (_, bar) in bars.stages {
                bar.finish();
            }
        }
    }
}
