//! Test support: every test talks to the real servers of the dev stack (`ops/dev-up`), each in a
//! namespace of its own so that tests run in parallel without seeing each other.

pub mod bench;

use pagestream_bus::{Bus, BusConfig};
use sqlx::postgres::PgPool;

fn required(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        // Tests cannot run without the stack; say how to get it.
        _ => panic!("{name} is not set: run `eval \"$(ops/dev-up)\"` first (ops/test does this)"),
    }
}

pub fn nats_url() -> String {
    required("PAGESTREAM_NATS_URL")
}

pub fn database_url() -> String {
    required("DATABASE_URL")
}

/// A subject root no other test uses: `t` + 12 hex digits.
pub fn unique_root() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A bus under a fresh root, its streams created.
pub async fn bus() -> Bus {
    bus_with(|config| config).await
}

/// A bus under a fresh root, with its configuration adjusted first. Its streams are deleted when
/// the test's runtime ends.
pub async fn bus_with(adjust: impl FnOnce(BusConfig) -> BusConfig) -> Bus {
    let config = adjust(BusConfig::new(nats_url()).with_root(unique_root()));
    let bus = Bus::connect(config)
        .await
        .expect("connect to nats (is ops/dev-up running?)");
    when_done(Cleanup::Streams {
        nats_url: bus.config().nats_url.clone(),
        prefix: bus.streams().prefix().to_owned(),
    });
    bus
}

/// A new, empty database with the `vector` extension and the migrations applied; returns its pool
/// and URL.
pub async fn database() -> (PgPool, String) {
    let (pool, url) = empty_database().await;
    pagestream_store::migrate(&pool).await.expect("migrate");
    (pool, url)
}

/// What a test leaves behind on the dev stack, removed when the runtime it was made on ends (as a
/// `#[tokio::test]`'s does when the test returns or fails), so that the suite's disk use stays
/// flat: a database, or a bus's streams (its facts, commands, key-value buckets and objects).
enum Cleanup {
    Database { admin_url: String, name: String },
    Streams { nats_url: String, prefix: String },
}

impl Cleanup {
    async fn run(&self) -> Result<(), String> {
        match self {
            Cleanup::Database { admin_url, name } => {
                let admin = pagestream_store::connect(admin_url, 1)
                    .await
                    .map_err(|error| error.to_string())?;
                // FORCE ends the connections the test's pool left behind.
                let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await
                .map_err(|error| error.to_string());
                admin.close().await;
                dropped.map(|_| ())
            }
            Cleanup::Streams { nats_url, prefix } => {
                let (jetstream, names) = streams_of(nats_url, prefix).await?;
                for name in names {
                    jetstream
                        .delete_stream(&name)
                        .await
                        .map_err(|error| format!("{name}: {error}"))?;
                }
                Ok(())
            }
        }
    }
}

/// The streams of the bus whose stream names start with `prefix`: `<prefix>_…`, and
/// `KV_<prefix>_…`, `OBJ_<prefix>_…` for its buckets.
async fn streams_of(
    nats_url: &str,
    prefix: &str,
) -> Result<(async_nats::jetstream::Context, Vec<String>), String> {
    use futures::TryStreamExt;
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|error| error.to_string())?;
    let jetstream = async_nats::jetstream::new(client);
    let names = jetstream
        .stream_names()
        .try_filter(|name| futures::future::ready(name.contains(prefix)))
        .try_collect()
        .await
        .map_err(|error| error.to_string())?;
    Ok((jetstream, names))
}

/// Runs its cleanup when dropped.
struct WhenDone(Option<Cleanup>);

impl Drop for WhenDone {
    fn drop(&mut self) {
        let Some(cleanup) = self.0.take() else { return };
        // The test's runtime is shutting down: clean up from a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(cleanup.run())
        })
        .join();
        if let Ok(Err(error)) = outcome {
            eprintln!("cannot clean up after a test: {error}");
        }
    }
}

/// Runs `cleanup` when the current runtime ends.
fn when_done(cleanup: Cleanup) {
    // A task that never ends: the runtime drops it, and the cleanup with it, when it shuts down.
    let guard = WhenDone(Some(cleanup));
    tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await
    });
}

/// A new, empty database with only the `vector` extension. It is dropped when the test's
/// runtime ends.
pub async fn empty_database() -> (PgPool, String) {
    let admin_url = database_url();
    let admin = pagestream_store::connect(&admin_url, 1)
        .await
        .expect("connect to postgres (is ops/dev-up running?)");
    let name = unique_root();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    when_done(Cleanup::Database {
        admin_url: admin_url.clone(),
        name: name.clone(),
    });
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("DATABASE_URL has no database name: {admin_url}"),
    };
    let pool = pagestream_store::connect(&url, 8)
        .await
        .expect("connect to test database");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&pool)
        .await
        .expect("create extension");
    (pool, url)
}

#[cfg(test)]
mod tests {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_test_database_is_dropped_when_its_test_ends() {
        let test = runtime();
        let (pool, url) = test.block_on(super::database());
        let name = url.rsplit('/').next().expect("database name").to_owned();
        let exists = |name: String| async move {
            let admin = pagestream_store::connect(&super::database_url(), 1)
                .await
                .expect("connect");
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&admin)
            .await
            .expect("query")
        };
        assert!(test.block_on(exists(name.clone())), "made");
        drop(pool);
        drop(test);
        assert!(!runtime().block_on(exists(name)), "dropped");
    }

    #[test]
    fn a_test_bus_leaves_no_stream_when_its_test_ends() {
        let test = runtime();
        let bus = test.block_on(super::bus());
        let prefix = bus.streams().prefix().to_owned();
        let streams_named = |prefix: String| async move {
            super::streams_of(&super::nats_url(), &prefix)
                .await
                .expect("stream names")
                .1
        };
        // Its fact and command streams, and a key-value bucket as the fetcher makes one.
        test.block_on(bus.key_value("STATE", "a test's bucket"))
            .expect("bucket");
        let made = test.block_on(streams_named(prefix.clone()));
        assert!(made.len() > 5, "{made:?}");
        drop(bus);
        drop(test);
        let left = runtime().block_on(streams_named(prefix));
        assert!(left.is_empty(), "{left:?}");
    }
}
