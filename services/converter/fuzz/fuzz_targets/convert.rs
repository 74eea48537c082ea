#![no_main]

//! Any bytes: a result or a permanent error, never a panic, an overflow, a hang or a blow-up (the
//! fuzzer's timeout and memory limits catch those).

use libfuzzer_sys::fuzz_target;
use pagestream_converter::{ConvertOptions, Limits, convert_bytes};

fuzz_target!(|data: &[u8]| {
    let options = ConvertOptions {
        confluence_base_url: Some("https://acme.atlassian.net/wiki".to_owned()),
        jira_base_url: Some("https://acme.atlassian.net".to_owned()),
        space_key: Some("ENG".to_owned()),
        page_id: Some("1".to_owned()),
        limits: Limits::default(),
    };
    if let Ok(conversion) = convert_bytes(data, &options) {
        // Metadata keys are always valid.
        for key in &conversion.metadata.jira_issue_links {
            assert!(pagestream_converter::is_valid_issue_key(key), "{key}");
        }
    }
});
