//! `pagestream-fetcher`: Confluence pages in, page events out.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_fetcher::Config>().await?)
}
