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

/// A bus under a fresh root, with its configuration adjusted first.
pub async fn bus_with(adjust: impl FnOnce(BusConfig) -> BusConfig) -> Bus {
    let config = adjust(BusConfig::new(nats_url()).with_root(unique_root()));
    Bus::connect(config)
        .await
        .expect("connect to nats (is ops/dev-up running?)")
}

/// A new, empty database with the `vector` extension and the migrations applied; returns its pool
/// and URL.
pub async fn database() -> (PgPool, String) {
    let (pool, url) = empty_database().await;
    pagestream_store::migrate(&pool).await.expect("migrate");
    (pool, url)
}

/// Drops a test's database when the runtime it was made on ends, as a `#[tokio::test]` does when
/// the test returns or fails, so that the suite's disk use stays flat.
struct DropWhenDone {
    admin_url: String,
    name: String,
}

impl Drop for DropWhenDone {
    fn drop(&mut self) {
        let admin_url = std::mem::take(&mut self.admin_url);
        let name = std::mem::take(&mut self.name);
        // The test's runtime is shutting down: drop the database from a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let admin = pagestream_store::connect(&admin_url, 1)
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
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("cannot drop a test database: {error}");
        }
    }
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
    let guard = DropWhenDone {
        admin_url: admin_url.clone(),
        name: name.clone(),
    };
    // A task that never ends: the runtime drops it, and the guard with it, when it shuts down.
    tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await
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
}
