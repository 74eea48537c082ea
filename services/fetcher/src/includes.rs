//! Include and excerpt-include macros: the pages a body pulls in, found by title and space key
//! (as the macros name them) and carried in the page's event (`PageChanged.included`) for the
//! converter to show in place of each macro. Resolution goes [`MAX_INCLUDE_DEPTH`] levels deep,
//! each page once (so cycles end), and stops carrying bodies past [`MAX_INCLUDED_BYTES`]. What an
//! event carries is recorded with the page (`PageRecord::included`: each included page's id and
//! version, and the names the macros named, found or not), so that a change of an included page,
//! or a page taking a name an include could not find, sends the pages that include it through
//! again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use pagestream_confluence::{ConfluenceClient, SpaceKey};
use pagestream_events::{
    ContentType, IncludedContent, IncludedPage, MAX_INCLUDE_DEPTH, PageId, PageInfo,
};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::FetcherError;
use crate::state::PageRecord;

/// Most storage carried for one page's includes, all levels together: an include past it is
/// shown as missing (its page still indexes).
pub const MAX_INCLUDED_BYTES: usize = 4 * 1024 * 1024;

/// Most distinct pages one page may include, all levels together (each costs a request).
const MAX_INCLUDED_PAGES: usize = 64;

/// Why an include is missing when no page bears the name it names.
const NOT_FOUND: &str = "not found";

/// What v1 content needs to be included: its body, version and space.
const INCLUDE_EXPAND: &[&str] = &["body.storage", "version", "space"];

/// A page an include macro names: its space key (none: the space of the page holding the macro)
/// and title.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    pub space_key: Option<String>,
    pub title: String,
}

/// What both include macros' names contain.
const INCLUDE: &[u8] = b"include";

/// Whether `storage` holds "include" in any case, or a character reference to a letter (which
/// could spell it): most bodies include nothing, and this scan spares them the parse, which a
/// full sync otherwise pays twice a page.
fn could_name_an_include(storage: &str) -> bool {
    let bytes = storage.as_bytes();
    if bytes
        .windows(INCLUDE.len())
        .any(|window| window.eq_ignore_ascii_case(INCLUDE))
    {
        return true;
    }
    storage.match_indices("&#").any(|(at, _)| {
        let reference = &storage[at + 2..];
        let (digits, radix) = match reference.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (reference, 10),
        };
        let end = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        u32::from_str_radix(&digits[..end], radix)
            .ok()
            .and_then(char::from_u32)
            .is_some_and(|c| c.is_ascii_alphabetic())
    })
}

/// The pages that the include and excerpt-include macros of a storage body name, in order, each
/// once. Storage that is not well formed is read as far as it goes.
pub(crate) fn targets(storage: &str) -> Vec<Target> {
    if !could_name_an_include(storage) {
        return Vec::new();
    }
    let mut reader = Reader::from_str(storage);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    // Open macros, innermost last: whether each is an include.
    let mut macros: Vec<bool> = Vec::new();
    let mut found = Vec::new();
    loop {
        let (element, opens) = match reader.read_event() {
            Ok(Event::Start(element)) => (element, true),
            Ok(Event::Empty(element)) => (element, false),
            Ok(Event::End(end)) => {
                if is_macro(end.name().as_ref()) {
                    macros.pop();
                }
                continue;
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => continue,
        };
        let name = element.name();
        if is_macro(name.as_ref()) {
            if opens {
                let include = attribute(&element, "ac:name").is_some_and(|macro_name| {
                    matches!(
                        macro_name.to_ascii_lowercase().as_str(),
                        "include" | "excerpt-include"
                    )
                });
                macros.push(include);
            }
        } else if name.as_ref() == "ri:page"
            && macros.last() == Some(&true)
            && let Some(title) = attribute(&element, "ri:content-title")
        {
            let target = Target {
                space_key: attribute(&element, "ri:space-key"),
                title,
            };
            if !found.contains(&target) {
                found.push(target);
            }
        }
    }
    found
}

fn is_macro(name: &str) -> bool {
    name == "ac:structured-macro" || name == "ac:macro"
}

/// An attribute's value, trimmed, entities resolved (HTML ones too); none when blank.
fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    let attribute = element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.as_ref() == name)?;
    let value = attribute
        .normalized_value_with(
            quick_xml::XmlVersion::Implicit1_0,
            1,
            quick_xml::escape::resolve_html5_entity,
        )
        .ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Included pages found so far, by space and title: a sync run shares one among its pages (a
/// page included by many is fetched once), a hint uses its own.
#[derive(Default)]
pub(crate) struct Resolver {
    found: Mutex<HashMap<(String, String), IncludedContent>>,
}

impl Resolver {
    fn cached(&self, key: &(String, String)) -> Option<IncludedContent> {
        self.found.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: (String, String), content: IncludedContent) {
        if let Ok(mut found) = self.found.lock() {
            found.insert(key, content);
        }
    }

    /// Fetches in bulk (v2, 250 a request) the pages of `space_key` that `bodies` include, and
    /// those these include, [`MAX_INCLUDE_DEPTH`] levels deep, finding their ids by title in
    /// `titles` (the space's listing): a full sync then resolves its pages' includes from here.
    /// Pages of other spaces, and titles the listing does not hold, are looked up one by one
    /// when a page needs them.
    pub async fn prefetch(
        &self,
        client: &ConfluenceClient,
        space_key: &str,
        titles: &HashMap<String, PageId>,
        bodies: Vec<String>,
    ) -> Result<(), FetcherError> {
        let mut level = bodies;
        for _ in 0..MAX_INCLUDE_DEPTH {
            let mut wanted: BTreeMap<PageId, String> = BTreeMap::new();
            for body in &level {
                for target in targets(body) {
                    if target
                        .space_key
                        .as_deref()
                        .is_some_and(|space| space != space_key)
                    {
                        continue;
                    }
                    let key = (space_key.to_owned(), target.title);
                    if self.cached(&key).is_some() {
                        continue;
                    }
                    if let Some(id) = titles.get(&key.1) {
                        wanted.insert(id.clone(), key.1);
                    }
                }
            }
            if wanted.is_empty() {
                return Ok(());
            }
            let ids: Vec<PageId> = wanted.keys().cloned().collect();
            let bulk = client.pages_by_id(&ids).await?;
            level = Vec::with_capacity(bulk.pages.len());
            for page in bulk.pages {
                // A page renamed since the listing is looked up by its title when needed.
                let Some(body) = page
                    .storage()
                    .filter(|_| wanted.get(&page.id) == Some(&page.title))
                else {
                    continue;
                };
                level.push(body.to_owned());
                self.remember(
                    (space_key.to_owned(), page.title.clone()),
                    IncludedContent::Found {
                        page_id: page.id.clone(),
                        version: page.version_number(),
                        body_storage: body.to_owned(),
                    },
                );
            }
        }
        Ok(())
    }

    /// The included pages of a page (its space, title and body), to [`MAX_INCLUDE_DEPTH`]
    /// levels, each once, the page itself never (an include of it, however deep, is a cycle).
    /// A page that is not found (deleted, or hidden from the API user) or would pass the bounds
    /// is carried as missing; a failure that may pass fails the page (it is tried again).
    pub async fn resolve(
        &self,
        client: &ConfluenceClient,
        page: &PageInfo,
        storage: &str,
    ) -> Result<Vec<IncludedPage>, FetcherError> {
        let space_key = page.space_key.as_str();
        let mut included: Vec<IncludedPage> = Vec::new();
        let mut seen: HashSet<(String, String)> =
            HashSet::from([(space_key.to_owned(), page.title.clone())]);
        let mut bytes = 0usize;
        // (space of the page holding the macros, its body), one level at a time.
        let mut level: Vec<(String, String)> = vec![(space_key.to_owned(), storage.to_owned())];
        for _ in 0..MAX_INCLUDE_DEPTH {
            let mut next = Vec::new();
            for (holder_space, body) in &level {
                for target in targets(body) {
                    let space = target.space_key.unwrap_or_else(|| holder_space.clone());
                    let key = (space, target.title);
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    let content = if included.len() >= MAX_INCLUDED_PAGES {
                        IncludedContent::Missing(format!(
                            "over the bound of {MAX_INCLUDED_PAGES} included pages"
                        ))
                    } else {
                        let found = match self.cached(&key) {
                            Some(found) => found,
                            None => {
                                let found = fetch(client, &key.0, &key.1).await?;
                                self.remember(key.clone(), found.clone());
                                found
                            }
                        };
                        within_bound(found, &mut bytes)
                    };
                    if let IncludedContent::Found { body_storage, .. } = &content {
                        next.push((key.0.clone(), body_storage.clone()));
                    }
                    included.push(IncludedPage {
                        space_key: key.0,
                        title: key.1,
                        content,
                    });
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        Ok(included)
    }
}

/// A found page, unless it would take the page's included bytes past [`MAX_INCLUDED_BYTES`].
fn within_bound(content: IncludedContent, bytes: &mut usize) -> IncludedContent {
    match content {
        IncludedContent::Found { body_storage, .. }
            if *bytes + body_storage.len() > MAX_INCLUDED_BYTES =>
        {
            IncludedContent::Missing(format!(
                "over the bound of {MAX_INCLUDED_BYTES} bytes of included content"
            ))
        }
        IncludedContent::Found {
            page_id,
            version,
            body_storage,
        } => {
            *bytes += body_storage.len();
            IncludedContent::Found {
                page_id,
                version,
                body_storage,
            }
        }
        missing => missing,
    }
}

/// One included page by space and title (v1).
async fn fetch(
    client: &ConfluenceClient,
    space: &str,
    title: &str,
) -> Result<IncludedContent, FetcherError> {
    let Ok(key) = SpaceKey::new(space) else {
        return Ok(IncludedContent::Missing("invalid space key".into()));
    };
    let page = match client.page_by_title(&key, title, INCLUDE_EXPAND).await {
        Ok(Some(page)) => page,
        Ok(None) => return Ok(IncludedContent::Missing(NOT_FOUND.into())),
        Err(error) if error.is_not_found() => {
            return Ok(IncludedContent::Missing(NOT_FOUND.into()));
        }
        Err(error) => return Err(error.into()),
    };
    let Some(body) = page.storage() else {
        return Ok(IncludedContent::Missing("no storage body".into()));
    };
    Ok(IncludedContent::Found {
        page_id: page.id.clone(),
        version: page.version_number(),
        body_storage: body.to_owned(),
    })
}

/// The pages an event carries as included, with their versions (what the page's record keeps).
pub(crate) fn versions(included: &[IncludedPage]) -> BTreeMap<PageId, u64> {
    included
        .iter()
        .filter_map(|page| match &page.content {
            IncludedContent::Found {
                page_id, version, ..
            } => Some((page_id.clone(), *version)),
            IncludedContent::Missing(_) => None,
        })
        .collect()
}

/// The name an include macro reaches a page by: its space key (which holds no `:`) and title.
pub(crate) fn include_name(space_key: &str, title: &str) -> String {
    format!("{space_key}:{title}")
}

/// The names an event's include macros named, found or not found (not those a bound left out:
/// a page bearing such a name would not be carried either).
pub(crate) fn names(included: &[IncludedPage]) -> BTreeSet<String> {
    included
        .iter()
        .filter(|page| match &page.content {
            IncludedContent::Found { .. } => true,
            IncludedContent::Missing(reason) => reason == NOT_FOUND,
        })
        .map(|page| include_name(&page.space_key, &page.title))
        .collect()
}

/// What is known now of a page that other pages may include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Now {
    Gone,
    /// Live at `version`, reached by `name` (none: not known, or not a page: include macros
    /// name pages only).
    Live {
        version: u64,
        name: Option<String>,
    },
}

impl Now {
    /// What a page's record says of it.
    pub fn of(record: &PageRecord) -> Self {
        match record.live_version() {
            None => Now::Gone,
            Some(version) => Now::Live {
                version,
                name: record
                    .include_name()
                    .filter(|_| record.content_type == ContentType::Page),
            },
        }
    }

    /// The name include macros reach the page by, if it is live and the name is known.
    pub fn name(&self) -> Option<&str> {
        match self {
            Now::Live { name, .. } => name.as_deref(),
            Now::Gone => None,
        }
    }
}

/// Whether `includer` was emitted with included content other than what is there now: one of
/// its included pages changed version, went, or no longer bears a name the includer names, or
/// a page now bears a name that the includer named without finding it. `now` tells what is
/// known of a page (none: nothing), `holder` which page bears a name.
pub(crate) fn is_stale(
    includer: &PageRecord,
    now: impl Fn(&PageId) -> Option<Now>,
    holder: impl Fn(&str) -> Option<PageId>,
) -> bool {
    let found = includer.included.as_ref();
    let names = includer.included_names.as_ref();
    let changed = found
        .into_iter()
        .flatten()
        .any(|(page, version)| match now(page) {
            None => false,
            Some(Now::Gone) => true,
            Some(Now::Live {
                version: current,
                name,
            }) => {
                current != *version
                    || matches!((name, names), (Some(name), Some(names)) if !names.contains(&name))
            }
        });
    changed
        || names.into_iter().flatten().any(|name| {
            holder(name).is_some_and(|page| !found.is_some_and(|found| found.contains_key(&page)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_include_macros_pages_each_once() {
        let storage = "<p>a&nbsp;b <ac:link><ri:page ri:content-title=\"Linked\" /></ac:link></p>\
            <ac:structured-macro ac:name=\"include\"><ac:parameter ac:name=\"\"><ac:link>\
            <ri:page ri:space-key=\"INCL\" ri:content-title=\"_what is the cockpit\" /></ac:link>\
            </ac:parameter></ac:structured-macro>\
            <ac:structured-macro ac:name=\"excerpt-include\"><ac:parameter ac:name=\"\">\
            <ac:link><ri:page ri:content-title=\"Caf&eacute; &amp; co\" /></ac:link></ac:parameter>\
            </ac:structured-macro>\
            <ac:structured-macro ac:name=\"include\"><ac:parameter ac:name=\"\"><ac:link>\
            <ri:page ri:space-key=\"INCL\" ri:content-title=\"_what is the cockpit\" /></ac:link>\
            </ac:parameter></ac:structured-macro>\
            <ac:structured-macro ac:name=\"info\"><ac:rich-text-body><p>\
            <ac:link><ri:page ri:content-title=\"Not included\" /></ac:link></p></ac:rich-text-body>\
            </ac:structured-macro>";
        assert_eq!(
            targets(storage),
            [
                Target {
                    space_key: Some("INCL".into()),
                    title: "_what is the cockpit".into()
                },
                Target {
                    space_key: None,
                    title: "Café & co".into()
                },
            ]
        );
        assert!(targets("<p>no includes</p>").is_empty());
        assert!(targets("<p><ac:structured-macro ac:name=\"include\"").is_empty());
    }

    #[test]
    fn a_macro_name_in_any_case_or_spelled_with_references_is_an_include() {
        let include = |name: &str| {
            format!(
                "<ac:structured-macro ac:name=\"{name}\"><ac:parameter ac:name=\"\"><ac:link>\
                 <ri:page ri:content-title=\"Snippet\" /></ac:link></ac:parameter>\
                 </ac:structured-macro>"
            )
        };
        let snippet = [Target {
            space_key: None,
            title: "Snippet".into(),
        }];
        assert_eq!(targets(&include("INCLUDE")), snippet);
        assert_eq!(targets(&include("Excerpt-Include")), snippet);
        assert_eq!(targets(&include("&#105;nclude")), snippet);
        assert_eq!(targets(&include("inc&#x6C;ude")), snippet);
        assert!(targets(&include("info")).is_empty());
        assert!(!could_name_an_include(
            "<p>it&#39;s &#128578; &#x2014; no macro</p>"
        ));
    }

    #[test]
    fn an_includer_is_stale_when_what_its_names_reach_changed() {
        let includer = PageRecord {
            included: Some(BTreeMap::from([(PageId::from(2), 5)])),
            included_names: Some(BTreeSet::from([
                include_name("ENG", "Found"),
                include_name("ENG", "Missing"),
            ])),
            ..PageRecord::default()
        };
        let live = |version, name: &str| Now::Live {
            version,
            name: Some(name.to_owned()),
        };
        let stale = |now: Now, holder: Option<(&str, u64)>| {
            is_stale(
                &includer,
                |page| (*page == PageId::from(2)).then(|| now.clone()),
                |name| {
                    holder
                        .filter(|(held, _)| *held == name)
                        .map(|(_, page)| PageId::from(page))
                },
            )
        };
        let found = include_name("ENG", "Found");
        let missing = include_name("ENG", "Missing");
        assert!(!stale(live(5, &found), Some((&found, 2))), "unchanged");
        assert!(stale(live(6, &found), None), "a new version");
        assert!(stale(Now::Gone, None), "gone");
        assert!(
            stale(live(5, &include_name("OPS", "Found")), None),
            "moved to another space without a version"
        );
        assert!(
            !stale(
                Now::Live {
                    version: 5,
                    name: None
                },
                None
            ),
            "a name not known says nothing"
        );
        assert!(
            stale(live(5, &found), Some((&missing, 9))),
            "a page took a name the includer missed"
        );
        assert!(
            stale(live(5, &found), Some((&found, 9))),
            "another page bears the name it found"
        );
    }
}
