//! The MCP server with a real client: the Python `mcp` SDK (installed by ops/mcp-client) drives
//! `pagestream mcp` over stdio and the api's `/mcp` over streamable HTTP against a synced test
//! space (tests/mcp-client/check.py says what it checks).

use std::path::Path;
use std::time::Duration;

use confluence_sim::CreatePage;

use super::stack::{API_KEY, Provider, SOURCE, Stack, eventually};

const JIRA_KEY: &str = "OPS-9182";
const CODE_TITLE: &str = "Deploy script";
const LONG_TITLE: &str = "Service handbook";
const REMOVED_PHRASE: &str = "obsolete gadget procedure";

fn jira_macro(key: &str) -> String {
    format!(
        "<ac:structured-macro ac:name=\"jira\" ac:schema-version=\"1\">\
         <ac:parameter ac:name=\"key\">{key}</ac:parameter></ac:structured-macro>"
    )
}

fn code_macro(language: &str, title: Option<&str>, code: &str) -> String {
    let title = title
        .map(|title| format!("<ac:parameter ac:name=\"title\">{title}</ac:parameter>"))
        .unwrap_or_default();
    format!(
        "<ac:structured-macro ac:name=\"code\" ac:schema-version=\"1\">\
         <ac:parameter ac:name=\"language\">{language}</ac:parameter>{title}\
         <ac:plain-text-body><![CDATA[{code}]]></ac:plain-text-body></ac:structured-macro>"
    )
}

/// A page of 24 sections of about a thousand characters, each with a marker phrase of its own.
fn long_body() -> String {
    let mut body = String::from("<p>How the services are run, topic by topic.</p>");
    for topic in 1..=24 {
        body.push_str(&format!("<h2>Topic {topic}</h2>"));
        for paragraph in 0..4 {
            body.push_str(&format!(
                "<p>Paragraph {paragraph} of topic {topic}: operators keep the service healthy \
                 by watching its dashboards, answering its alerts and writing down what they \
                 learn. marker{topic:02}phrase appears here.</p>"
            ));
        }
    }
    body
}

async fn create(stack: &Stack, title: &str, parent: Option<u64>, body: String) -> u64 {
    let (page, _) = stack
        .sim
        .handle
        .create(CreatePage {
            title: title.to_owned(),
            parent_id: parent,
            body: Some(body),
            ..CreatePage::default()
        })
        .await
        .expect("create page");
    page.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_mcp_client_over_stdio_and_streamable_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".dev/mcp-venv/bin/python");
    assert!(
        python.exists(),
        "the Python MCP client is missing from {}: run ops/mcp-client (ops/test does)",
        python.display()
    );

    let stack = Stack::start(6, Provider::Hash(384)).await;
    let long_page = create(&stack, LONG_TITLE, None, long_body()).await;
    let child_page = create(
        &stack,
        "Handbook appendix",
        Some(long_page),
        "<p>Contacts and escalation paths.</p>".to_owned(),
    )
    .await;
    let jira_page = create(
        &stack,
        "Deploy runbook",
        None,
        format!(
            "<p>Releases are tracked in {jira}. Read the \
             <ac:link><ri:page ri:content-title=\"{LONG_TITLE}\" /></ac:link> first.</p>\
             <h2>Deploy</h2><p>Run the deploy script:</p>{python}\
             <h2>Rollback</h2><p>To go back to the previous release:</p>{bash}",
            jira = jira_macro(JIRA_KEY),
            python = code_macro(
                "python",
                Some(CODE_TITLE),
                "import deploy\n\ndeploy.run(version=\"2.4\", canary=True)\n"
            ),
            bash = code_macro("bash", None, "./deploy.sh --rollback --to previous\n"),
        ),
    )
    .await;
    let jira_twin = create(
        &stack,
        "Release checklist",
        None,
        format!(
            "<p>Before each release, check the items of {}.</p>",
            jira_macro(JIRA_KEY)
        ),
    )
    .await;
    let removed_page = create(
        &stack,
        "Obsolete procedure",
        None,
        format!("<p>The {REMOVED_PHRASE} is no longer used.</p>"),
    )
    .await;

    stack.add_source().await;
    let synced = stack
        .cli(&["sync", SOURCE, "--full", "--wait", "--timeout-secs", "300"])
        .await
        .expect("sync --wait");
    assert!(synced.contains("failed 0"), "{synced}");

    // The removed page goes the way a trashed page goes: a webhook, then the pipeline.
    stack
        .sim
        .handle
        .set_webhook_target(Some(stack.webhook_url.clone()));
    stack.sim.handle.trash(removed_page).await.expect("trash");
    let removed = removed_page.to_string();
    eventually(
        "the trashed page is gone",
        Duration::from_secs(60),
        || async { stack.cli(&["pages", SOURCE, &removed]).await.is_err() },
    )
    .await;
    let live_pages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM confluence_pages WHERE NOT is_deleted")
            .fetch_one(&stack.pool)
            .await
            .expect("count pages");

    let expect = serde_json::json!({
        "source": SOURCE,
        "space": "ENG",
        "live_pages": live_pages,
        "jira": JIRA_KEY,
        "jira_page": jira_page.to_string(),
        "jira_title": "Deploy runbook",
        "jira_twin": jira_twin.to_string(),
        "code_title": CODE_TITLE,
        "long_page": long_page.to_string(),
        "long_title": LONG_TITLE,
        "long_section": "Topic 7",
        "long_section_phrase": "marker07phrase",
        "other_section_phrase": "marker08phrase",
        "child_page": child_page.to_string(),
        "removed_page": removed,
        "removed_phrase": REMOVED_PHRASE,
    });
    let output = tokio::process::Command::new(&python)
        .arg(root.join("tests/mcp-client/check.py"))
        .env("MCP_EXPECT", expect.to_string())
        .env("PAGESTREAM_BIN", env!("CARGO_BIN_EXE_pagestream"))
        .env("PAGESTREAM_API_URL", &stack.api_url)
        .env("PAGESTREAM_API_KEY", API_KEY)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), output)
        .await
        .expect("the client finishes within 3 minutes")
        .expect("run the python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the python client failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("mcp client checks:"), "{stdout}\n{stderr}");
    println!("{stdout}");

    // A second client where one is installed (not by ops/test): the MCP Inspector's CLI mode.
    if let Ok(inspector) = std::env::var("PAGESTREAM_MCP_INSPECTOR") {
        inspect(&inspector, &stack, &jira_page.to_string()).await;
    }
}

/// The same calls with `mcp-inspector --cli`, over stdio and over HTTP; prints what it showed.
async fn inspect(inspector: &str, stack: &Stack, jira_page: &str) {
    let stdio = [
        "--cli",
        "-e",
        &format!("PAGESTREAM_API_URL={}", stack.api_url),
        "-e",
        &format!("PAGESTREAM_API_KEY={API_KEY}"),
        env!("CARGO_BIN_EXE_pagestream"),
        "mcp",
    ]
    .map(str::to_owned);
    let mcp_url = format!("{}/mcp", stack.api_url);
    let http = [
        "--cli",
        &mcp_url,
        "--transport",
        "http",
        "--header",
        &format!("Authorization: Bearer {API_KEY}"),
    ]
    .map(str::to_owned);
    let resource = format!("confluence://{SOURCE}/{jira_page}");
    let calls: [(&[String], &[&str], &str); 5] = [
        (&stdio, &["--method", "tools/list"], "search_code"),
        (
            &stdio,
            &[
                "--method",
                "tools/call",
                "--tool-name",
                "search",
                "--tool-arg",
                "query=OPS-9182",
                "--tool-arg",
                "limit=1",
            ],
            jira_page,
        ),
        (
            &http,
            &[
                "--method",
                "tools/call",
                "--tool-name",
                "search_code",
                "--tool-arg",
                "query=deploy",
                "--tool-arg",
                "language=python",
                "--tool-arg",
                "limit=1",
            ],
            "import deploy",
        ),
        (
            &http,
            &["--method", "resources/templates/list"],
            "confluence://{source}/{page_id}",
        ),
        (
            &http,
            &["--method", "resources/read", "--uri", &resource],
            JIRA_KEY,
        ),
    ];
    for (target, method, expected) in calls {
        let output = tokio::process::Command::new(inspector)
            .args(target)
            .args(method)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), output)
            .await
            .expect("the inspector finishes")
            .expect("run the inspector");
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("mcp-inspector {}:\n{stdout}", method.join(" "));
        assert!(
            output.status.success() && stdout.contains(expected),
            "inspector {method:?}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
