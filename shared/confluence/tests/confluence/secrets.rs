//! The token never shows up: not in errors (Display or Debug), not in `Debug` of the client or its
//! configuration, not in any log line the client (or the simulator beside it) writes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use confluence_sim::{FaultRule, Faults};
use pagestream_confluence::{Auth, ConfluenceClient, ConfluenceError, quote_cql};
use pagestream_events::PageId;

use super::{EMAIL, TOKEN, client, fast_config, sim};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} leaks a secret: {text}");
    }
}

#[tokio::test]
async fn the_token_never_reaches_errors_debug_output_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, not scoped: with a scoped subscriber, callsites first hit by tests on other threads
    // can cache "not interested" and this test's events go missing. Only this test installs one.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let sim = sim(12).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"));
    let wrong = "wrong-Kk42-secret-token";
    let wrong_encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{wrong}"));
    let secrets = [TOKEN, encoded.as_str(), wrong, wrong_encoded.as_str()];
    let mut errors: Vec<ConfluenceError> = Vec::new();

    // 401 with a wrong token.
    let mut config = fast_config(&sim);
    config.auth = Auth::cloud(EMAIL, wrong);
    assert_clean("config debug", &format!("{config:?}"), &secrets);
    let bad = ConfluenceClient::new(config).expect("client");
    assert_clean("client debug", &format!("{bad:?}"), &secrets);
    errors.push(bad.page(&PageId::from(1)).await.expect_err("401"));

    // The server echoes the token back in an error message: it is scrubbed.
    let client = client(&sim);
    let echo = format!("type=page and token = {}", quote_cql(TOKEN));
    let err = client
        .search(&echo, &[], 10)
        .collect_all()
        .await
        .expect_err("400 echoing the cql");
    if let ConfluenceError::Rejected { message, .. } = &err {
        assert!(message.contains("[redacted]"), "{message}");
    } else {
        panic!("expected Rejected, got {err:?}");
    }
    errors.push(err);

    // Retries (logged at warn) ending in rate-limit and server errors.
    let mut config = fast_config(&sim);
    config.retry.max_attempts = 2;
    let impatient = ConfluenceClient::new(config).expect("client");
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(429).retry_after("1")],
        ..Faults::default()
    });
    errors.push(impatient.page(&PageId::from(1)).await.expect_err("429"));
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(502)],
        ..Faults::default()
    });
    errors.push(impatient.page(&PageId::from(1)).await.expect_err("502"));
    sim.handle.clear_faults();

    // A transport failure.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut config = pagestream_confluence::ClientConfig::new(
        format!("http://{addr}/wiki"),
        Auth::cloud(EMAIL, TOKEN),
    );
    config.retry.max_attempts = 1;
    errors.push(
        ConfluenceClient::new(config)
            .expect("client")
            .page(&PageId::from(1))
            .await
            .expect_err("refused"),
    );

    for error in &errors {
        assert_clean("error display", &error.to_string(), &secrets);
        assert_clean("error debug", &format!("{error:?}"), &secrets);
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            assert_clean("error source", &inner.to_string(), &secrets);
            source = inner.source();
        }
    }
    let captured = logs.text();
    assert!(
        captured.contains("confluence request will be retried"),
        "the retries were logged: {captured}"
    );
    assert!(
        captured.contains("confluence request"),
        "requests were logged"
    );
    assert_clean("logs", &captured, &secrets);
}
