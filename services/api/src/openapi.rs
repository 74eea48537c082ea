//! The OpenAPI document, generated from the handlers' annotations so that it cannot drift.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};
use crate::{pages, search, sources, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pagestream api",
        description = "Confluence sources, sync runs, pages and hybrid search. Every /api route \
            requires `Authorization: Bearer <PAGESTREAM_API_KEY>`. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"}}`; `field` names the parameter at fault."
    ),
    paths(
        sources::create,
        sources::list,
        sources::sync,
        sources::status,
        sources::remove,
        sources::update,
        sources::rotate_webhook_path,
        webhooks::check,
        webhooks::register,
        webhooks::remove,
        pages::list,
        pages::detail,
        search::handler,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&BearerKey),
    tags(
        (name = "sources", description = "Confluence sources and their sync runs"),
        (name = "pages", description = "Pages as projected"),
        (name = "search", description = "Hybrid search"),
    )
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
