//! `pagestream-indexer`: projects the streams into Postgres.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_indexer::Config>().await?)
}
