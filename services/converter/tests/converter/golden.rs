//! Golden tests: each `tests/fixtures/NAME.xml` converts to `NAME.md` and `NAME.metadata.json`.
//! `UPDATE_GOLDEN=1 cargo test -p pagestream-converter golden` rewrites them; review the diff.

use std::path::{Path, PathBuf};

use pagestream_converter::{ParseMode, convert};

use crate::support::site_options;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn check_or_update(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).expect("write golden file");
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(error) => failures.push(format!(
            "{}: {error} (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

#[test]
fn fixtures_convert_to_their_golden_markdown_and_metadata() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "fixtures missing: {fixtures:?}");
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let storage = std::fs::read_to_string(fixture).expect("read fixture");
        let conversion = convert(&storage, &site_options()).expect("fixture converts");
        let expected_mode = if fixture.ends_with("malformed.xml") {
            ParseMode::Lenient
        } else {
            ParseMode::Strict
        };
        assert_eq!(
            conversion.parse_mode,
            expected_mode,
            "{}",
            fixture.display()
        );
        check_or_update(
            &fixture.with_extension("md"),
            &conversion.markdown,
            &mut failures,
        );
        let metadata =
            serde_json::to_string_pretty(&conversion.metadata).expect("metadata json") + "\n";
        check_or_update(
            &fixture.with_extension("metadata.json"),
            &metadata,
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
