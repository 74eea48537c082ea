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

/// A new, empty database with only the `vector` extension.
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
