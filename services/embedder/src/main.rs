//! `pagestream-embedder`: chunks converted pages and embeds them, as a pipeline stage; also answers
//! the api's query-embedding requests.

// Embedding allocates large temporaries; mimalloc reuses them far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_embedder::Config>().await?)
}
