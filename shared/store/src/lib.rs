//! The Postgres projection (DESIGN §4): its schema, connections, per-model vector indexes, and
//! every typed read and write of its tables. No other crate spells a table or column name: the
//! indexer writes through [`pages`], [`chunks`], [`sources`] and [`runs`], the api reads through
//! those and [`search`].

pub mod chunks;
pub mod pages;
pub mod runs;
pub mod search;
pub mod sources;

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to postgres: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid embedding model {model:?} of dimension {dimension}")]
    InvalidModel { model: String, dimension: i32 },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether a write named a row of another table that is not there (SQLSTATE 23503): for the
    /// projection, a source removed while its event was applied.
    pub fn is_missing_reference(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(error))
            if error.code().as_deref() == Some("23503"))
    }
}

impl pagestream_events::Retryable for StoreError {
    fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Migrate(_)
            | StoreError::InvalidModel { .. }
            | StoreError::Invalid { .. } => false,
            StoreError::Database(error) => is_transient(error),
        }
    }
}

/// Whether a database error may pass: Postgres down, restarting, overloaded, a lost connection or
/// a conflict with a concurrent writer. Only data the database refuses (SQLSTATE classes 22, data
/// exception, and 23, integrity constraint violation, but for a unique key two writers raced for)
/// fails the same way on every retry.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => !error.code().is_some_and(|code| {
            code.starts_with("22") || (code.starts_with("23") && code != "23505")
        }),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::RowNotFound
        | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    }
}

/// A `u64` from an event as a Postgres `bigint`.
pub(crate) fn bigint(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid {
        what,
        reason: format!("{value} too large"),
    })
}

/// Connects with a pool of at most `max_connections`.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    connect_with(database_url, max_connections, None).await
}

/// Connects a pool for search: every connection gets the HNSW settings (`hnsw_ef_search`
/// candidates, iterative scans), so that no query needs a transaction of its own to set them.
pub async fn connect_for_search(
    database_url: &str,
    max_connections: u32,
    hnsw_ef_search: u32,
) -> Result<PgPool, StoreError> {
    connect_with(database_url, max_connections, Some(hnsw_ef_search)).await
}

async fn connect_with(
    database_url: &str,
    max_connections: u32,
    hnsw_ef_search: Option<u32>,
) -> Result<PgPool, StoreError> {
    let mut options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10));
    if let Some(ef_search) = hnsw_ef_search {
        options = options.after_connect(move |connection, _meta| {
            Box::pin(async move {
                // pgvector's settings; iterative scans keep filtered vector queries from coming
                // back short when the filter rejects most of the nearest neighbours.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET hnsw.ef_search = {ef_search}; SET hnsw.iterative_scan = relaxed_order;"
                )))
                .execute(&mut *connection)
                .await?;
                Ok(())
            })
        });
    }
    options
        .connect(database_url)
        .await
        .map_err(StoreError::Connect)
}

/// The dimension of a model's stored vectors, if any model of that name is known.
pub async fn model_dimension<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    model: &str,
) -> Result<Option<i32>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT dimension FROM embedding_models WHERE model = $1")
            .bind(model)
            .fetch_optional(executor)
            .await?,
    )
}

/// Whether `model`'s vector index exists (bulk mode drops it while a backlog loads, and a build
/// in progress is not there yet).
pub async fn embedding_index_exists<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    model: &str,
) -> Result<bool, StoreError> {
    let exists: Option<bool> = sqlx::query_scalar(
        "SELECT to_regclass(index_name) IS NOT NULL FROM embedding_models WHERE model = $1",
    )
    .bind(model)
    .fetch_optional(executor)
    .await?;
    Ok(exists.unwrap_or(false))
}

/// Applies pending migrations; a second run changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The name of a model's HNSW index: readable, and unique per model.
pub fn embedding_index_name(model: &str) -> String {
    let slug: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let digest = Sha256::digest(model.as_bytes());
    let hash: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("chunks_embedding_{slug}_{hash}")
}

/// Makes sure a model has its partial HNSW index, so that its vectors are searchable at speed.
/// Idempotent and safe to call from several indexer replicas at once; runs in the caller's
/// transaction when given one.
pub async fn ensure_embedding_index(
    conn: &mut PgConnection,
    model: &str,
    dimension: i32,
) -> Result<(), StoreError> {
    if model.is_empty() || model.len() > 200 || !(1..=16_000).contains(&dimension) {
        return Err(StoreError::InvalidModel {
            model: model.chars().take(200).collect(),
            dimension,
        });
    }
    match model_dimension(&mut *conn, model).await? {
        Some(stored) if stored == dimension => return Ok(()),
        Some(_) => {
            return Err(StoreError::InvalidModel {
                model: model.to_owned(),
                dimension,
            });
        }
        None => {}
    }
    let index = embedding_index_name(model);
    // Serializes index creation across replicas (until the surrounding transaction ends).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pagestream.embedding_models'))")
        .execute(&mut *conn)
        .await?;
    // DDL cannot take bind parameters: the model name is quoted as a literal, the dimension is an
    // integer and the index name is derived from [a-z0-9_] only.
    create_embedding_index(&mut *conn, model, dimension, &index).await?;
    sqlx::query(
        "INSERT INTO embedding_models (model, dimension, index_name) VALUES ($1, $2, $3) ON CONFLICT (model) DO NOTHING",
    )
    .bind(model)
    .bind(dimension)
    .bind(&index)
    .execute(&mut *conn)
    .await?;
    tracing::info!(
        model,
        dimension,
        index,
        "created vector index for a new embedding model"
    );
    Ok(())
}

/// The partial HNSW index of one model's vectors.
async fn create_embedding_index(
    conn: &mut PgConnection,
    model: &str,
    dimension: i32,
    index: &str,
) -> Result<(), StoreError> {
    // DDL cannot take bind parameters: the model name is quoted as a literal, the dimension is an
    // integer and the index name is derived from [a-z0-9_] only.
    let literal = model.replace('\'', "''");
    let index = index.replace('"', "");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE INDEX IF NOT EXISTS \"{index}\" ON chunks USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) WHERE embedding_model = '{literal}'"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The full-text index of the chunks (a GIN index over `tsv`, from the first migration).
const TEXT_INDEX: &str = "chunks_tsv";

/// Drops the search indexes a bulk load would otherwise update row by row: every model's vector
/// index that exists (their `embedding_models` rows stay) and the full-text index. Building each
/// once afterwards is far faster than inserting into an HNSW graph or a GIN index row by row
/// (the GIN inserts and their pending-list cleanups were a tenth of Postgres's CPU in a first
/// sync); meanwhile search ranks vectors by an exact scan, and Postgres's text leg scans `tsv`
/// (the api's own text index is unaffected). Returns how many were dropped.
pub async fn drop_search_indexes(pool: &PgPool) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    let indexes = embedding_indexes(&mut tx, true).await?;
    let mut dropped: Vec<String> = indexes
        .into_iter()
        .map(|(_, _, index)| index.replace('"', ""))
        .collect();
    if text_index_exists(&mut *tx).await? {
        dropped.push(TEXT_INDEX.to_owned());
    }
    for index in &dropped {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS \"{index}\""
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(dropped.len())
}

/// Whether the full-text index exists.
async fn text_index_exists<'c>(executor: impl sqlx::PgExecutor<'c>) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(TEXT_INDEX)
        .fetch_one(executor)
        .await?)
}

/// Creates every search index that is missing (after [`drop_search_indexes`]): the full-text
/// index and every model's vector index, with memory and parallel workers for the builds.
/// Returns how many were built.
pub async fn build_search_indexes(pool: &PgPool) -> Result<usize, StoreError> {
    // Asked four times a second by the live indexer: when nothing is missing, no transaction and
    // no lock.
    let any_missing: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM embedding_models WHERE to_regclass(index_name) IS NULL) \
         OR to_regclass($1) IS NULL",
    )
    .bind(TEXT_INDEX)
    .fetch_one(pool)
    .await?;
    if !any_missing {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let missing = embedding_indexes(&mut tx, false).await?;
    let mut built = 0;
    if !text_index_exists(&mut *tx).await? {
        let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
            .fetch_one(&mut *tx)
            .await?;
        give_build_memory(&mut tx, text_index_build_memory_kb(chunks)).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE INDEX IF NOT EXISTS {TEXT_INDEX} ON chunks USING gin (tsv)"
        )))
        .execute(&mut *tx)
        .await?;
        built += 1;
    }
    for (model, dimension, index) in &missing {
        let vectors: i64 =
            sqlx::query_scalar("SELECT count(*) FROM chunks WHERE embedding_model = $1")
                .bind(model)
                .fetch_one(&mut *tx)
                .await?;
        give_build_memory(&mut tx, index_build_memory_kb(vectors, *dimension)).await?;
        create_embedding_index(&mut tx, model, *dimension, index).await?;
        built += 1;
    }
    tx.commit().await?;
    Ok(built)
}

/// Gives the index builds of this transaction `memory_kb` and parallel workers (the settings end
/// with the transaction).
async fn give_build_memory(conn: &mut PgConnection, memory_kb: i64) -> Result<(), StoreError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL maintenance_work_mem = '{memory_kb}kB'; SET LOCAL max_parallel_maintenance_workers = 4;"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The `maintenance_work_mem` of a full-text index build over `chunks` rows: a GIN build
/// gathers its entries in memory and writes them out whenever the memory is full, so room for
/// all of them makes it one pass. A chunk has a hundred or two distinct lexemes, each a 6-byte
/// row pointer in the build (the lexemes themselves are kept once): 2 kB a chunk leaves room.
fn text_index_build_memory_kb(chunks: i64) -> i64 {
    (chunks.max(0) * 2).clamp(64 << 10, MAX_BUILD_MEMORY_KB)
}

/// Most memory an index build may take (about 450,000 vectors of 384 dimensions). A parallel
/// build takes it from `/dev/shm`, which a host or container must have room for.
const MAX_BUILD_MEMORY_KB: i64 = 1 << 20;

/// The `maintenance_work_mem` that holds an HNSW graph of `vectors` vectors while it is built:
/// pgvector builds in memory up to that setting and goes on on disk past it, several times slower
/// (measured at 384 dimensions: 2,251 bytes per vector; 30,000 vectors built in 17.4 s in memory,
/// 53.8 s with half of them past the limit).
fn index_build_memory_kb(vectors: i64, dimension: i32) -> i64 {
    // Neighbour lists and element headers besides the vector (715 bytes measured, m = 16).
    const PER_VECTOR_OVERHEAD: i64 = 1024;
    let needed = vectors.max(0) * (i64::from(dimension.max(1)) * 4 + PER_VECTOR_OVERHEAD) / 1024;
    (needed + needed / 4).clamp(64 << 10, MAX_BUILD_MEMORY_KB)
}

/// The models whose vector index exists (`present`) or is missing, as (model, dimension, index),
/// read under the lock that serializes index changes across indexer replicas (held until the
/// transaction ends).
async fn embedding_indexes(
    conn: &mut PgConnection,
    present: bool,
) -> Result<Vec<(String, i32, String)>, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pagestream.embedding_models'))")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_as(
        "SELECT model, dimension, index_name FROM embedding_models \
         WHERE (to_regclass(index_name) IS NOT NULL) = $1 ORDER BY model",
    )
    .bind(present)
    .fetch_all(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_build_gets_the_memory_its_graph_was_measured_to_take() {
        // 2,251 bytes per 384-dimension vector, measured on pgvector's build notice.
        for vectors in [0_i64, 1_000, 30_000, 277_737, 400_000] {
            let kb = index_build_memory_kb(vectors, 384);
            assert!(kb * 1024 >= vectors * 2251, "{vectors} vectors: {kb} kB");
            assert!(kb >= 64 << 10);
        }
        assert_eq!(index_build_memory_kb(10_000_000, 384), MAX_BUILD_MEMORY_KB);
        assert!(index_build_memory_kb(100_000, 1536) > index_build_memory_kb(100_000, 384));
    }
}
