//! Tolerant decoding of payloads shaped like what Confluence really sends (modelled on the public
//! samples: v1 content with expansions, v1 `/search` wrappers, v2 pages and spaces, Data Center
//! users), including ids as numbers, nulls, and fields this client has never heard of.

use pagestream_confluence::{Content, Page, SearchHit, Space};

const V1_CONTENT: &str = r#"{
  "id": "22470657", "type": "page", "status": "current", "title": "Release checklist",
  "space": {"id": 131074, "key": "OPS", "name": "Operations", "type": "global", "status": "current",
            "_expandable": {"settings": "/rest/api/space/OPS/settings", "homepage": "/rest/api/content/131090"},
            "_links": {"webui": "/spaces/OPS", "self": "https://acme.atlassian.net/wiki/rest/api/space/OPS"}},
  "version": {"by": {"type": "known", "accountId": "557058:aaaa-bbbb", "accountType": "atlassian",
                     "email": "", "publicName": "Kim", "displayName": "Kim Lee",
                     "profilePicture": {"path": "/wiki/aa-avatar/x", "width": 48, "height": 48, "isDefault": false},
                     "isExternalCollaborator": false, "_expandable": {"operations": "", "personalSpace": ""}},
              "when": "2024-05-02T08:15:30.120Z", "friendlyWhen": "May 02, 2024", "message": "",
              "number": 4, "minorEdit": false, "ncsStepVersion": "12", "confRev": "confluence$content$22470657.9",
              "contentTypeModified": false},
  "ancestors": [
    {"id": "131090", "type": "page", "status": "current", "title": "Operations Home",
     "macroRenderedOutput": {}, "extensions": {"position": 12}},
    {"id": 22400001, "type": "page", "status": "current", "title": "Releases"}
  ],
  "macroRenderedOutput": {},
  "body": {"storage": {"value": "<p>ship it</p>", "representation": "storage", "embeddedContent": []},
           "_expandable": {"editor": "", "view": "", "atlas_doc_format": ""}},
  "metadata": {"labels": {"results": [{"prefix": "global", "name": "release", "id": "9830401", "label": "release"},
                                      {"prefix": "my", "name": "todo", "id": 9830402, "label": "todo"}],
                          "start": 0, "limit": 200, "size": 2,
                          "_links": {"next": "/rest/api/content/22470657/label?next=true&limit=200&start=200"}},
               "_expandable": {"currentuser": "", "properties": ""}},
  "extensions": {"position": 871},
  "_links": {"editui": "/pages/resumedraft.action?draftId=22470657", "webui": "/spaces/OPS/pages/22470657/Release+checklist",
             "context": "/wiki", "self": "https://acme.atlassian.net/wiki/rest/api/content/22470657",
             "tinyui": "/x/AYBWAQ", "base": "https://acme.atlassian.net/wiki"}
}"#;

const V1_SEARCH_WRAPPED: &str = r#"{
  "content": {"id": "31457281", "type": "page", "status": "current", "title": "Glossary",
              "childTypes": {}, "restrictions": {},
              "_expandable": {"history": "/rest/api/content/31457281/history", "space": "/rest/api/space/DOC"},
              "_links": {"webui": "/spaces/DOC/pages/31457281/Glossary", "tinyui": "/x/AQDgAQ"}},
  "title": "Glossary", "excerpt": "Terms used across the docs", "url": "/spaces/DOC/pages/31457281/Glossary",
  "resultGlobalContainer": {"title": "Docs", "displayUrl": "/spaces/DOC"}, "breadcrumbs": [],
  "entityType": "content", "iconCssClass": "aui-iconfont-page-default",
  "lastModified": "2022-01-10T11:00:00.000Z", "friendlyLastModified": "Jan 10, 2022", "score": 0.0
}"#;

const V1_DATA_CENTER: &str = r#"{
  "id": 884736, "type": "page", "status": "current", "title": "On-call",
  "space": {"id": 98310, "key": "SRE", "name": "SRE"},
  "version": {"by": {"type": "known", "username": "jdoe", "userKey": "8a7f808a6a1b2c3d", "displayName": "J. Doe"},
              "when": "2023-11-30T17:02:11.000+01:00", "number": "12", "minorEdit": true},
  "history": {"latest": true, "createdBy": {"type": "known", "username": "asmith", "displayName": "A. Smith"},
              "createdDate": "2019-04-01T09:00:00.000+02:00"},
  "ancestors": null, "body": null, "metadata": {"labels": null}
}"#;

const V2_PAGE: &str = r#"{
  "id": "22470657", "status": "current", "title": "Release checklist", "spaceId": "131074",
  "parentId": "22400001", "parentType": "page", "position": 3, "authorId": "557058:aaaa-bbbb",
  "ownerId": "557058:aaaa-bbbb", "lastOwnerId": null, "subtype": null,
  "createdAt": "2024-01-15T10:00:00.000Z",
  "version": {"createdAt": "2024-05-02T08:15:30.120Z", "message": "", "number": 4, "minorEdit": false,
              "authorId": "557058:aaaa-bbbb", "ncsStepVersion": "12"},
  "body": {"storage": {"representation": "storage", "value": "<p>ship it</p>"}},
  "labels": {"results": [{"id": "9830401", "name": "release", "prefix": "global"}],
             "meta": {"hasMore": false, "cursor": null}, "_links": {}},
  "isFavoritedByCurrentUser": false,
  "_links": {"editui": "/pages/resumedraft.action?draftId=22470657", "webui": "/spaces/OPS/pages/22470657/Release+checklist",
             "tinyui": "/x/AYBWAQ"}
}"#;

const V2_PAGE_MINIMAL: &str = r#"{"id": 131090, "title": "Operations Home", "parentId": null, "spaceId": 131074,
  "version": {"number": 1}, "body": {}}"#;

const V2_SPACE: &str = r#"{"id": "131074", "key": "OPS", "name": "Operations", "type": "global", "status": "current",
  "authorId": "557058:aaaa-bbbb", "createdAt": "2020-02-02T02:02:02.000Z", "homepageId": "131090",
  "description": null, "icon": null, "currentActiveAlias": "OPS", "_links": {"webui": "/spaces/OPS"}}"#;

#[test]
fn v1_content_with_expansions() {
    let content: Content = serde_json::from_str(V1_CONTENT).expect("v1 content");
    assert_eq!(content.id.as_str(), "22470657");
    assert_eq!(content.version_number(), 4);
    assert_eq!(content.storage(), Some("<p>ship it</p>"));
    assert_eq!(content.label_names(), ["release", "todo"]);
    let space = content.space.as_ref().expect("space");
    assert_eq!(
        (space.key.as_str(), space.id.as_ref().map(|i| i.as_str())),
        ("OPS", Some("131074"))
    );
    let ancestors: Vec<(&str, Option<&str>)> = content
        .ancestors
        .iter()
        .map(|a| (a.id.as_str(), a.title.as_deref()))
        .collect();
    assert_eq!(
        ancestors,
        [
            ("131090", Some("Operations Home")),
            ("22400001", Some("Releases"))
        ]
    );
    let by = content
        .version
        .as_ref()
        .and_then(|v| v.by.as_ref())
        .expect("author");
    assert_eq!(by.account_id.as_deref(), Some("557058:aaaa-bbbb"));
    assert_eq!(
        content.last_modified().map(|d| d.to_rfc3339()),
        Some("2024-05-02T08:15:30.120+00:00".to_owned())
    );
    assert_eq!(
        content.links.webui.as_deref(),
        Some("/spaces/OPS/pages/22470657/Release+checklist")
    );
}

#[test]
fn v1_search_wrapper_and_data_center_shapes() {
    let hit: SearchHit = serde_json::from_str(V1_SEARCH_WRAPPED).expect("wrapped hit");
    assert_eq!(hit.0.id.as_str(), "31457281");
    assert_eq!(hit.0.version_number(), 0, "version was not expanded");

    let dc: Content = serde_json::from_str(V1_DATA_CENTER).expect("data center content");
    assert_eq!(dc.id.as_str(), "884736");
    assert_eq!(dc.version_number(), 12);
    assert!(dc.ancestors.is_empty() && dc.storage().is_none() && dc.label_names().is_empty());
    let by = dc
        .version
        .as_ref()
        .and_then(|v| v.by.as_ref())
        .expect("author");
    assert_eq!(
        (by.username.as_deref(), by.account_id.as_deref()),
        (Some("jdoe"), None)
    );
    assert_eq!(
        dc.last_modified().map(|d| d.to_rfc3339()),
        Some("2023-11-30T16:02:11+00:00".to_owned())
    );
    let created = dc.history.as_ref().and_then(|h| h.created_by.as_ref());
    assert_eq!(
        created.and_then(|u| u.display_name.as_deref()),
        Some("A. Smith")
    );
}

#[test]
fn v2_pages_and_spaces() {
    let page: Page = serde_json::from_str(V2_PAGE).expect("v2 page");
    assert_eq!(
        page.parent_id.as_ref().map(|p| p.as_str()),
        Some("22400001")
    );
    assert_eq!(page.version_number(), 4);
    assert_eq!(page.storage(), Some("<p>ship it</p>"));
    assert_eq!(page.label_names(), ["release"]);
    assert!(page.created_at.is_some());

    let root: Page = serde_json::from_str(V2_PAGE_MINIMAL).expect("minimal v2 page");
    assert_eq!(root.id.as_str(), "131090");
    assert_eq!(root.parent_id, None);
    assert_eq!(root.storage(), None);
    assert_eq!(root.space_id.as_ref().map(|s| s.as_str()), Some("131074"));

    let space: Space = serde_json::from_str(V2_SPACE).expect("v2 space");
    assert_eq!(space.id.as_str(), "131074");
    assert_eq!(
        space.homepage_id.as_ref().map(|p| p.as_str()),
        Some("131090")
    );
}

#[test]
fn malformed_identity_is_rejected() {
    assert!(serde_json::from_str::<Page>(r#"{"id": "12;DROP", "title": "x"}"#).is_err());
    assert!(serde_json::from_str::<Content>(r#"{"title": "no id"}"#).is_err());
    assert!(serde_json::from_str::<Space>(r#"{"id": "../1", "key": "X"}"#).is_err());
}
