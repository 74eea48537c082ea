//! `pagestream dlq`: the events a stage gave up on, and retrying them.

use std::io::Write;

use pagestream_bus::Bus;
use pagestream_bus::dead_letter::{self, RetryOutcome};

use crate::commands::print_json;
use crate::error::CliError;
use crate::table::Table;

pub async fn list(
    bus: &Bus,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let letters = dead_letter::list(bus, limit).await?;
    if json {
        let value: Vec<serde_json::Value> = letters
            .iter()
            .map(|(sequence, letter)| {
                serde_json::json!({
                    "sequence": sequence,
                    "stage": letter.stage,
                    "subject": letter.subject,
                    "reason": letter.reason,
                    "deliveries": letter.deliveries,
                    "failed_at": letter.failed_at,
                    "event_id": letter.event_id,
                })
            })
            .collect();
        return print_json(out, &value);
    }
    if letters.is_empty() {
        writeln!(out, "no dead letters")?;
        return Ok(());
    }
    let mut table = Table::new(vec![
        "seq",
        "stage",
        "subject",
        "deliveries",
        "failed at",
        "reason",
    ]);
    for (sequence, letter) in &letters {
        table.row(vec![
            sequence.to_string(),
            letter.stage.clone(),
            letter.subject.clone(),
            letter.deliveries.to_string(),
            letter.failed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            letter.reason.clone(),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "({} dead letters; fix the cause, then `pagestream dlq retry <seq>…` or `--all`)",
        letters.len()
    )?;
    Ok(())
}

pub async fn retry(
    bus: &Bus,
    sequences: &[u64],
    all: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let sequences: Vec<u64> = if all {
        dead_letter::list(bus, usize::MAX)
            .await?
            .into_iter()
            .map(|(sequence, _)| sequence)
            .collect()
    } else {
        sequences.to_vec()
    };
    if sequences.is_empty() {
        return Err(CliError::Usage(
            "nothing to retry\n  name dead letters by sequence (see `pagestream dlq list`) or pass --all"
                .into(),
        ));
    }
    for sequence in sequences {
        let retried = dead_letter::retry(bus, sequence).await?;
        let letter = &retried.letter;
        match retried.outcome {
            RetryOutcome::Published => writeln!(
                out,
                "retried {sequence}: {} again on {}",
                letter.stage, letter.subject
            )?,
            RetryOutcome::Superseded { reason } => writeln!(
                out,
                "dropped {sequence}: {reason}, so publishing {} again would take the page back",
                letter.subject
            )?,
        }
    }
    Ok(())
}
