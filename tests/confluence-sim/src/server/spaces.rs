//! Spaces through v1 (`GET /wiki/rest/api/space`, the listing Data Center has), beside v2's
//! `/wiki/api/v2/spaces`.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::{Api, App, Params, guard, limit, ok, param, param_list, site};

/// `GET /wiki/rest/api/space?spaceKey=A&spaceKey=B&start=0&limit=25`: the spaces the user can
/// see, `spaceKey` filtering (repeatable), paged by `start`/`limit` with `_links.next`.
pub(super) async fn v1_spaces(
    State(shared): App,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let near = match guard(
        &shared,
        &headers,
        "/wiki/rest/api/space",
        "v1.spaces",
        Api::V1,
    )
    .await
    {
        Ok(near) => near,
        Err(response) => return response,
    };
    let site = site(&headers, &shared);
    let state = shared.lock();
    let keys = param_list(&params, "spaceKey");
    let start: usize = param(&params, "start")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit = match limit(&params, &state) {
        Ok(limit) => limit,
        Err(message) => {
            return super::error(Api::V1, axum::http::StatusCode::BAD_REQUEST, &message);
        }
    };
    let matching: Vec<_> = state
        .spaces()
        .filter(|space| keys.is_empty() || keys.iter().any(|k| k.eq_ignore_ascii_case(&space.key)))
        .collect();
    let results: Vec<_> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|space| {
            json!({
                "id": space.id,
                "key": space.key,
                "name": space.name,
                "type": "global",
                "status": "current",
                "_links": {"webui": format!("/spaces/{}", space.key), "self": format!("{site}/rest/api/space/{}", space.key)},
                "_expandable": {"homepage": "", "description": "", "metadata": ""},
            })
        })
        .collect();
    let size = results.len();
    let mut links = json!({"base": site, "context": "/wiki"});
    if start + size < matching.len()
        && let Some(map) = links.as_object_mut()
    {
        let mut next = format!("/rest/api/space?start={}&limit={limit}", start + size);
        for key in &keys {
            next.push_str(&format!("&spaceKey={key}"));
        }
        map.insert("next".into(), json!(next));
    }
    ok(
        json!({"results": results, "start": start, "limit": limit, "size": size, "_links": links}),
        near,
        None,
    )
}
