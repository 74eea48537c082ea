//! `pagestream-converter`: Confluence storage format to Markdown, as a pipeline stage.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_converter::Config>().await?)
}
