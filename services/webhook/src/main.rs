//! `pagestream-webhook`: Confluence webhooks in, page hints out.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_webhook::Config>().await?)
}
