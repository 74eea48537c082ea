//! `pagestream replay`: rebuild the projection from the streams (no Confluence, no embedding
//! provider), or have the embedders re-embed every converted page.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::ConsumerErrorKind;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagestream_bus::Bus;
use pagestream_events::EventKind;
use pagestream_indexer::replay::{ReplayProgress, replay};
use pagestream_sources::SourceRegistry;
use secrecy::ExposeSecret;

use crate::commands::print_json;
use crate::error::CliError;
use crate::{Connection, ReplayArgs};

/// The durable consumer shared by the embedder replicas (`pagestream-embedder`).
const EMBEDDER_CONSUMER: &str = "embedder";

pub async fn run(
    connection: &Connection,
    args: &ReplayArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let bus = connection.bus().await?;
    if args.reembed {
        return reembed(&bus, out).await;
    }
    let database_url = connection
        .database_url
        .as_ref()
        .map(ExposeSecret::expose_secret)
        .ok_or_else(|| {
        CliError::Usage(
            "no database to replay into\n  set DATABASE_URL (or --database-url) to an empty Postgres database with pgvector".into(),
        )
    })?;
    let pool = pagestream_store::connect(database_url, 8)
        .await
        .map_err(|error| CliError::DatabaseUnreachable {
            reason: error.to_string(),
        })?;
    pagestream_store::migrate(&pool)
        .await
        .map_err(|error| CliError::DatabaseUnreachable {
            reason: error.to_string(),
        })?;
    let pages = pagestream_store::pages::count_all(&pool)
        .await
        .map_err(|error| CliError::DatabaseUnreachable {
            reason: error.to_string(),
        })?;
    if pages > 0 && !args.allow_existing {
        return Err(CliError::DatabaseNotEmpty { pages });
    }
    let registry = SourceRegistry::open(&bus).await?;
    let bar = progress_bar();
    let report = replay(
        &bus,
        &registry,
        &pool,
        args.batch_size.max(1),
        |progress: ReplayProgress| {
            bar.set_prefix(progress.kind.name());
            bar.set_length(progress.total);
            bar.set_position(progress.applied);
            if bar.is_hidden() && progress.applied == progress.total {
                eprintln!("  {} {} events", progress.kind.name(), progress.total);
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    if args.json {
        print_json(out, &report)?;
    } else {
        writeln!(
            out,
            "replayed {} sources, {} events, {} chunks in {:.1} s (vector indexes {:.1} s; {:.0} chunks/s); {} skipped{}",
            report.sources,
            report.events,
            report.chunks,
            report.seconds,
            report.index_seconds,
            report.chunks as f64 / report.seconds.max(1e-9),
            report.skipped,
            if report.skipped > 0 {
                " (see the log lines above)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(
            "  {prefix:>14} [{bar:40.cyan/blue}] {pos:>7}/{len:<7} {per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Deletes the embedders' durable consumer: the running replicas create it again from the first
/// `page.converted` and re-embed every page with their configured model (unchanged chunks of the
/// same model keep their vectors).
async fn reembed(bus: &Bus, out: &mut dyn Write) -> Result<(), CliError> {
    let stream = bus.streams().for_kind(EventKind::PageConverted);
    let deleted = bus
        .jetstream()
        .delete_consumer_from_stream(EMBEDDER_CONSUMER, &stream)
        .await;
    match deleted {
        Ok(_) => writeln!(
            out,
            "the embedders will re-embed every converted page from {stream}\n  restart them with the new model first (PAGESTREAM_EMBEDDING_MODEL, and the api's), then follow the chunks with `pagestream status`"
        )?,
        Err(error)
            if matches!(error.kind(), ConsumerErrorKind::JetStream(ref inner)
                if inner.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            writeln!(
                out,
                "no embedder has consumed {stream} yet: the first one started will embed every page"
            )?
        }
        Err(error) => {
            return Err(CliError::Bus(pagestream_bus::BusError::JetStream {
                operation: "delete embedder consumer",
                reason: error.to_string(),
            }));
        }
    }
    Ok(())
}
