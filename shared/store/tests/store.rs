//! Migrations against a real Postgres with pgvector.

use pagestream_store::{embedding_index_name, ensure_embedding_index, migrate};

async fn index_definitions(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname")
        .fetch_all(pool)
        .await
        .expect("indexes")
}

#[tokio::test]
async fn migrations_apply_once_and_create_the_indexes() {
    let (pool, _) = pagestream_testkit::empty_database().await;
    migrate(&pool).await.expect("first run");
    let before = index_definitions(&pool).await;
    migrate(&pool).await.expect("second run");
    assert_eq!(
        before,
        index_definitions(&pool).await,
        "second run changed the schema"
    );

    let find = |name: &str| {
        before
            .iter()
            .find(|(index, _)| index == name)
            .map(|(_, definition)| definition.clone())
            .unwrap_or_else(|| panic!("index {name} missing"))
    };
    assert!(find("chunks_embedding_all_minilm_l6_v2").contains("USING hnsw"));
    assert!(find("chunks_embedding_all_minilm_l6_v2").contains("vector_cosine_ops"));
    assert!(find("chunks_tsv").contains("USING gin"));
    assert!(find("confluence_pages_jira").contains("USING gin"));
    assert!(find("confluence_pages_mentions").contains("USING gin"));
    assert!(find("confluence_pages_path").contains("text_pattern_ops"));
    assert!(find("confluence_pages_source_live").contains("WHERE (NOT is_deleted)"));
    for table in ["sources", "confluence_pages", "chunks", "sync_runs"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .expect("regclass");
        assert!(exists, "table {table} missing");
    }
}

#[tokio::test]
async fn a_new_model_gets_its_own_vector_index_and_both_models_coexist() {
    let (pool, _) = pagestream_testkit::database().await;
    let mut conn = pool.acquire().await.expect("connection");
    ensure_embedding_index(&mut conn, "text-embedding-3-small", 1536)
        .await
        .expect("new model");
    ensure_embedding_index(&mut conn, "text-embedding-3-small", 1536)
        .await
        .expect("idempotent");
    assert!(
        ensure_embedding_index(&mut conn, "text-embedding-3-small", 768)
            .await
            .is_err(),
        "a model cannot change dimension"
    );
    let name = embedding_index_name("text-embedding-3-small");
    let definition: String =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .expect("index exists");
    assert!(definition.contains("hnsw") && definition.contains("1536"));

    // Vectors of both dimensions live in one table, and a query on one model uses its index.
    sqlx::query("INSERT INTO sources (id, key, site_url, space_key, auth_kind, credentials) VALUES (gen_random_uuid(), 'eng', 'https://x.atlassian.net', 'ENG', 'cloud', '\\x00')")
        .execute(&pool)
        .await
        .expect("source");
    for (model, dimension) in [
        ("all-MiniLM-L6-v2", 384i32),
        ("text-embedding-3-small", 1536),
    ] {
        let vector = format!("[{}]", vec!["0.1"; dimension as usize].join(","));
        sqlx::query("INSERT INTO chunks (source_id, page_id, embedding_model, chunk_index, page_version, text, content_hash, token_count, embedding_dim, embedding) SELECT id, '1', $1, 0, 1, 'hello world', 'h', 2, $2, $3::vector FROM sources")
            .bind(model)
            .bind(dimension)
            .bind(vector)
            .execute(&pool)
            .await
            .expect("insert chunk");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 2);
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .expect("set");
    let query = format!("[{}]", vec!["0.1"; 384].join(","));
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT page_id FROM chunks WHERE embedding_model = 'all-MiniLM-L6-v2' ORDER BY embedding::vector(384) <=> $1::vector(384) LIMIT 5")
        .bind(query)
        .fetch_all(&mut *tx)
        .await
        .expect("explain");
    assert!(
        plan.iter()
            .any(|line| line.contains("chunks_embedding_all_minilm_l6_v2")),
        "plan does not use the model's index: {plan:#?}"
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The store owns the SQL: no other crate's code (its `src/`; tests and benchmarks may inspect
/// the database) names a projection table after an SQL keyword.
#[test]
fn no_other_crate_speaks_sql_to_the_projection_tables() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for group in ["services", "shared", "tests"] {
        let Ok(crates) = std::fs::read_dir(root.join(group)) else {
            continue;
        };
        for krate in crates.flatten() {
            if krate.path().ends_with("shared/store") {
                continue;
            }
            rust_files(&krate.path().join("src"), &mut files);
        }
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let tables = [
        "sources",
        "confluence_pages",
        "chunks",
        "sync_runs",
        "embedding_models",
    ];
    let keywords = ["FROM", "INTO", "UPDATE", "JOIN", "TABLE"];
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source file");
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| !word.is_empty())
            .collect();
        for pair in words.windows(2) {
            if keywords.contains(&pair[0]) && tables.contains(&pair[1]) {
                offenders.push(format!("{}: {} {}", file.display(), pair[0], pair[1]));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL against projection tables outside shared/store:\n{}",
        offenders.join("\n")
    );
}
