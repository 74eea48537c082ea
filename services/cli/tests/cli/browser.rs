//! The web UI in a real headless Chromium, driven by Playwright (`tests/browser/ui_test.py`),
//! against every service in this process: sign in, add a source of two spaces, watch the run's bars, search,
//! read pages, retry a dead letter, and the attacks that must fail. Needs Chromium and
//! Playwright, which `ops/browser-setup` installs; `ops/test-ui` runs it (and `ops/test` runs
//! that), hence `#[ignore]` in a plain `cargo test`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use confluence_sim::{CreatePage, SimSpace};

use super::stack::{API_KEY, Provider, SIM_TOKEN, SOURCE, Stack};

/// A page whose every part tries to run script: title, raw HTML in text, a code block, links.
const HOSTILE_TITLE: &str = r#"Injection <img src=x onerror="window.__pwned='title'"> test"#;
const HOSTILE_BODY: &str = r#"<p>Hostile page &lt;script&gt;window.__pwned='text';alert('text')&lt;/script&gt; ends here.</p>
<p>&lt;img src=x onerror="window.__pwned='img';alert('img')"&gt;</p>
<p><a href="javascript:window.__pwned='link';alert('link')">click me</a></p>
<p>&lt;svg onload="window.__pwned='svg'"&gt;&lt;/svg&gt; and &lt;iframe src="javascript:alert('frame')"&gt;&lt;/iframe&gt;</p>
<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[<script>window.__pwned='code';alert('code')</script>]]></ac:plain-text-body></ac:structured-macro>
<p>[markdown link](javascript:alert('md')) and <a href="https://docs.example/safe">a safe link</a></p>"#;

const RELEASE_TITLE: &str = "Release checklist for the payments service";
const RELEASE_BODY: &str = "<h2>Before the release</h2><p>Freeze the payments branch, run the \
    migration rehearsal and tell support. Tracked in UIX-4242.</p><h2>Rolling back</h2><p>Deploy the \
    previous tag and restore the ledger snapshot.</p>";

fn screenshot_dir() -> PathBuf {
    std::env::var_os("PAGESTREAM_SCREENSHOT_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and Playwright: run by ops/test-ui"]
async fn the_ui_in_a_real_browser() {
    let python = std::env::var("BROWSER_PYTHON").expect("BROWSER_PYTHON (ops/browser-setup)");
    let chromium = std::env::var("CHROMIUM").expect("CHROMIUM (ops/browser-setup)");
    let stack = Stack::start(40, Provider::Hash(384)).await;
    for (title, body) in [(HOSTILE_TITLE, HOSTILE_BODY), (RELEASE_TITLE, RELEASE_BODY)] {
        stack
            .sim
            .handle
            .create(CreatePage {
                title: title.to_owned(),
                body: Some(body.to_owned()),
                labels: vec!["ui-test".to_owned()],
                ..CreatePage::default()
            })
            .await
            .expect("create page");
    }
    // A second space (its homepage alone), which the source is added with.
    stack
        .sim
        .handle
        .add_space(SimSpace {
            id: 98_306,
            key: "OPS".to_owned(),
            name: "Operations".to_owned(),
        })
        .expect("add space");
    // A poison event, so that there is a dead letter to retry.
    let subject = format!("{}.page.changed.{SOURCE}.999", stack.bus.config().root);
    stack
        .bus
        .jetstream()
        .publish(subject, Bytes::from_static(b"{not an event"))
        .await
        .expect("publish")
        .await
        .expect("ack");

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/ui_test.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .env("UI_URL", &stack.api_url)
        .env("API_KEY", API_KEY)
        .env("SIM_URL", stack.sim.base_url())
        .env("SIM_TOKEN", SIM_TOKEN)
        .env("SOURCE", SOURCE)
        .env("SPACE", "ENG")
        .env("OTHER_SPACE", "OPS")
        .env("HOSTILE_TITLE_PART", "Injection")
        .env("RELEASE_TITLE", RELEASE_TITLE)
        .env("JIRA_KEY", "UIX-4242")
        .env("CHROMIUM", chromium)
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser test (python)");
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the browser test ran for over 5 minutes")
        .expect("browser test output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("browser: all scenarios passed"), "{stdout}");
}
