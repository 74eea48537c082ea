//! `pagestream-api`: the REST api (see the library for what it serves).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Ok(pagestream_service::main::<pagestream_api::Config>().await?)
}
