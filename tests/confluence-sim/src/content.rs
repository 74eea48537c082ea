//! The generated space: a seeded page tree (up to seven levels deep) with titles, authors, labels
//! and versions, and storage-format bodies rendered on demand from (seed, page, version) so that
//! thousands of pages cost almost nothing until they are fetched.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::rng::SplitMix64;

/// The first generated page id (ids then increase by one; created pages continue the sequence).
pub const FIRST_PAGE_ID: u64 = 1_048_577;
/// Deepest level of the generated tree (the homepage is level 1).
pub const MAX_DEPTH: u8 = 7;

const MIN_BODY: f64 = 1024.0;
const MAX_BODY: f64 = 73.0 * 1024.0;
const LARGE_BODY: usize = 1_100_000;
/// Bodies up to this size are snippets, what include macros pull in.
const SNIPPET_BODY: usize = 2048;

/// Whether a generated page is small enough to be included: the samples' includes name snippet
/// pages of a paragraph or two (`_what is the cockpit`), not ordinary pages.
pub(crate) fn is_snippet(page: &SimPage) -> bool {
    page.body_target <= SNIPPET_BODY
}

/// Users who author pages and are mentioned in bodies: (account id, display name).
pub const USERS: &[(&str, &str)] = &[
    (
        "557058:0b1c2d3e-0001-4a5b-8c9d-aa0000000001",
        "Ada Lovelace",
    ),
    (
        "557058:0b1c2d3e-0002-4a5b-8c9d-aa0000000002",
        "Grace Hopper",
    ),
    ("557058:0b1c2d3e-0003-4a5b-8c9d-aa0000000003", "Alan Turing"),
    (
        "557058:0b1c2d3e-0004-4a5b-8c9d-aa0000000004",
        "Barbara Liskov",
    ),
    (
        "712020:5f6e7d8c-0005-4b3a-9c8d-bb0000000005",
        "Edsger Dijkstra",
    ),
    (
        "712020:5f6e7d8c-0006-4b3a-9c8d-bb0000000006",
        "Margaret Hamilton",
    ),
];

const LABELS: &[&str] = &[
    "runbook",
    "architecture",
    "onboarding",
    "howto",
    "decision",
    "incident",
    "api",
    "security",
    "release-notes",
    "meeting-notes",
    "faq",
    "deprecated",
];

const TOPICS: &[&str] = &[
    "Deployment",
    "Billing",
    "Search",
    "Ingestion",
    "Auth",
    "Storage",
    "Networking",
    "Observability",
    "Payments",
    "Onboarding",
    "Caching",
    "Scheduler",
    "Gateway",
    "Mobile",
    "Analytics",
    "Backup",
];

const KINDS: &[&str] = &[
    "Runbook",
    "Overview",
    "Design",
    "FAQ",
    "Postmortem",
    "Guide",
    "Decision Record",
    "Checklist",
    "Reference",
    "Roadmap",
    "Meeting Notes",
    "Troubleshooting",
];

const WORDS: &[&str] = &[
    "service",
    "request",
    "latency",
    "cluster",
    "deploy",
    "rollback",
    "config",
    "token",
    "queue",
    "replica",
    "index",
    "schema",
    "migration",
    "alert",
    "dashboard",
    "owner",
    "incident",
    "budget",
    "release",
    "feature",
    "flag",
    "endpoint",
    "payload",
    "retry",
    "timeout",
    "cache",
    "shard",
    "backup",
    "restore",
    "policy",
    "quota",
    "throughput",
    "review",
    "approval",
    "pipeline",
    "the",
    "a",
    "with",
    "for",
    "when",
    "after",
    "before",
    "and",
    "or",
    "is",
    "are",
    "must",
    "should",
];

const LANGUAGES: &[&str] = &[
    "rust",
    "python",
    "java",
    "bash",
    "sql",
    "yaml",
    "json",
    "javascript",
    "go",
    "xml",
];

const STATUS_COLOURS: &[&str] = &["Green", "Yellow", "Red", "Blue", "Purple", "Grey"];
const PANELS: &[&str] = &["info", "tip", "note", "warning"];
const EMOTICONS: &[(&str, &str, &str)] = &[
    ("smile", ":slight_smile:", "1f642"),
    ("tick", ":check_mark:", "2714"),
    ("warning", ":warning:", "26a0"),
    ("thumbs-up", ":thumbsup:", "1f44d"),
    ("information", ":information_source:", "2139"),
];

/// Lifecycle of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PageStatus {
    Current,
    Trashed,
}

/// What a piece of content is (Confluence ids are unique across both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    #[default]
    Page,
    /// A blog post: no parent, no position, its own v2 endpoints and `blog_*` webhooks.
    Blogpost,
    /// A folder (Cloud): a place in the page tree without a body, at `/api/v2/folders/{id}`;
    /// pages under it name it as their parent (`parentType: folder`).
    Folder,
}

impl ContentKind {
    /// The v1 `type` / webhook `contentType`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Blogpost => "blogpost",
            Self::Folder => "folder",
        }
    }
}

/// One page (or blog post) of the simulated space.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimPage {
    pub id: u64,
    pub kind: ContentKind,
    /// The space it belongs to (a move under a page of another space changes it).
    pub space_id: u64,
    pub title: String,
    pub parent_id: Option<u64>,
    pub position: u32,
    pub status: PageStatus,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    /// Index into [`USERS`].
    pub author: usize,
    pub last_modifier: usize,
    pub labels: Vec<String>,
    /// Size the generated body aims at.
    pub body_target: usize,
    /// A body set explicitly by a mutation; otherwise the body is rendered from the seed.
    #[serde(skip)]
    pub body: Option<String>,
}

/// Generates `count` pages. Page 0 is the homepage; pages 1..=6 form a chain down to level 7
/// so the deepest level always exists; the rest hang under random pages above level 7.
/// `large` pages (evenly spread) get bodies over 1 MB. All belong to the space `space_id`.
pub fn generate_pages(
    seed: u64,
    space_id: u64,
    count: usize,
    large: usize,
) -> BTreeMap<u64, SimPage> {
    let mut rng = SplitMix64::derive(seed, &[0x5eed]);
    let epoch = Utc
        .with_ymd_and_hms(2023, 1, 2, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut pages = BTreeMap::new();
    let mut depth_of: Vec<u8> = Vec::with_capacity(count);
    let mut eligible_parents: Vec<usize> = Vec::new();
    let mut children: Vec<u32> = Vec::with_capacity(count);
    let large_every = count
        .checked_div(large)
        .map_or(usize::MAX, |every| every.max(1));
    let ln_min = MIN_BODY.ln();
    let ln_span = MAX_BODY.ln() - ln_min;
    for index in 0..count {
        let id = FIRST_PAGE_ID + index as u64;
        let parent_index = match index {
            0 => None,
            1..=6 => Some(index - 1),
            _ => Some(*rng.pick(&eligible_parents)),
        };
        let depth = parent_index.map_or(1, |p| depth_of[p] + 1);
        depth_of.push(depth);
        children.push(0);
        if depth < MAX_DEPTH {
            eligible_parents.push(index);
        }
        let position = parent_index.map_or(0, |p| {
            children[p] += 1;
            children[p]
        });
        let title = if index == 0 {
            "Engineering Home".to_owned()
        } else {
            format!("{} {} {}", rng.pick(TOPICS), rng.pick(KINDS), index)
        };
        let created_at = epoch + Duration::minutes(rng.below(400 * 24 * 60) as i64);
        let modified_at = created_at
            + Duration::minutes(rng.below(120 * 24 * 60) as i64)
            + Duration::seconds(rng.below(60) as i64);
        let label_count = rng.below(4);
        let mut labels: Vec<String> = (0..label_count)
            .map(|_| rng.pick(LABELS).to_string())
            .collect();
        labels.sort();
        labels.dedup();
        let body_target = if large > 0 && index % large_every == large_every / 2 {
            LARGE_BODY + rng.below(500_000)
        } else {
            (ln_min + rng.unit() * ln_span).exp() as usize
        };
        let author = rng.below(USERS.len());
        pages.insert(
            id,
            SimPage {
                id,
                title,
                kind: ContentKind::Page,
                space_id,
                parent_id: parent_index.map(|p| FIRST_PAGE_ID + p as u64),
                position,
                status: PageStatus::Current,
                version: 1 + rng.below(12) as u64,
                created_at,
                modified_at,
                author,
                last_modifier: (author + rng.below(2)) % USERS.len(),
                labels,
                body_target,
                body: None,
            },
        );
    }
    pages
}

/// Generates `count` blog posts with ids from `first_id`: no parent, a dated title, a body like a
/// page's (1–75 KB), in the space `space_id`.
pub fn generate_blog_posts(seed: u64, space_id: u64, first_id: u64, count: usize) -> Vec<SimPage> {
    let mut rng = SplitMix64::derive(seed, &[0xb106]);
    let epoch = Utc
        .with_ymd_and_hms(2023, 1, 2, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let ln_min = MIN_BODY.ln();
    let ln_span = MAX_BODY.ln() - ln_min;
    (0..count)
        .map(|index| {
            let created_at = epoch + Duration::minutes(rng.below(400 * 24 * 60) as i64);
            let modified_at = created_at
                + Duration::minutes(rng.below(30 * 24 * 60) as i64)
                + Duration::seconds(rng.below(60) as i64);
            let author = rng.below(USERS.len());
            let mut labels = vec![rng.pick(LABELS).to_string()];
            labels.sort();
            SimPage {
                id: first_id + index as u64,
                kind: ContentKind::Blogpost,
                space_id,
                title: format!("{} update {}", rng.pick(TOPICS), index + 1),
                parent_id: None,
                position: 0,
                status: PageStatus::Current,
                version: 1 + rng.below(4) as u64,
                created_at,
                modified_at,
                author,
                last_modifier: author,
                labels,
                body_target: (ln_min + rng.unit() * ln_span).exp() as usize,
                body: None,
            }
        })
        .collect()
}

/// Where a comment sits on its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommentLocation {
    /// Below the page (`/footer-comments`).
    Footer,
    /// On a highlighted selection of the page (`/inline-comments`).
    Inline,
}

/// An inline comment's `resolutionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    Open,
    Reopened,
    Resolved,
}

/// A comment on a page or blog post, or a reply to one (`parent_comment_id`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimComment {
    pub id: u64,
    /// The page or blog post it is on.
    pub container_id: u64,
    pub location: CommentLocation,
    pub parent_comment_id: Option<u64>,
    /// Index into [`USERS`].
    pub author: usize,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub version: u64,
    /// Storage format.
    pub body: String,
    /// Top-level inline comments only.
    pub resolution: Option<Resolution>,
    /// The text an inline comment highlights.
    pub selection: Option<String>,
}

/// Generates `count` comments with ids from `first_id` on `containers` (id, creation date): a
/// quarter of them replies to an earlier comment of the same container, three in ten inline (of
/// which a third resolved).
pub fn generate_comments(
    seed: u64,
    first_id: u64,
    count: usize,
    containers: &[(u64, DateTime<Utc>)],
) -> Vec<SimComment> {
    let mut rng = SplitMix64::derive(seed, &[0xc033]);
    let mut comments: Vec<SimComment> = Vec::with_capacity(count);
    let mut top_level: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    if containers.is_empty() {
        return comments;
    }
    for index in 0..count {
        let (container_id, container_created) = *rng.pick(containers);
        let earlier = top_level.get(&container_id);
        let parent = match earlier {
            Some(earlier) if rng.below(4) == 0 => Some(&comments[*rng.pick(earlier)]),
            _ => None,
        };
        let location = match parent {
            Some(parent) => parent.location,
            None if rng.below(10) < 3 => CommentLocation::Inline,
            None => CommentLocation::Footer,
        };
        let created_at = parent.map_or(container_created, |p| p.created_at)
            + Duration::minutes(1 + rng.below(60 * 24 * 30) as i64);
        let author = rng.below(USERS.len());
        let resolution = (location == CommentLocation::Inline && parent.is_none()).then(|| {
            if rng.below(3) == 0 {
                Resolution::Resolved
            } else {
                Resolution::Open
            }
        });
        let words = 8 + rng.below(16);
        let comment = SimComment {
            id: first_id + index as u64,
            container_id,
            location,
            parent_comment_id: parent.map(|p| p.id),
            author,
            created_at,
            modified_at: created_at,
            version: 1,
            body: format!("<p>{}.</p>", sentence(&mut rng, words)),
            resolution,
            selection: (location == CommentLocation::Inline && parent.is_none())
                .then(|| sentence(&mut rng, 3)),
        };
        if comment.parent_comment_id.is_none() {
            top_level.entry(container_id).or_default().push(index);
        }
        comments.push(comment);
    }
    comments
}

/// A file attached to a page or blog post. Its bytes are kept for every version (a download
/// names the version it wants, as Cloud's download links do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimAttachment {
    pub id: u64,
    /// The page or blog post it is attached to.
    pub container_id: u64,
    /// The file name (Confluence's attachment title).
    pub title: String,
    pub media_type: String,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    /// Index into [`USERS`].
    pub author: usize,
    /// Trashed attachments leave listings and searches; a restore brings them back.
    pub trashed: bool,
    /// The file's bytes at each version, the first version first.
    #[serde(skip)]
    pub versions: Vec<Vec<u8>>,
}

impl SimAttachment {
    /// Cloud's attachment ids carry an `att` prefix.
    pub fn content_id(&self) -> String {
        format!("att{}", self.id)
    }

    /// The bytes of a version (the current one when none is named).
    pub fn data(&self, version: Option<u64>) -> Option<&[u8]> {
        let version = version.unwrap_or(self.version);
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions.get(index).map(Vec::as_slice)
    }

    pub fn file_size(&self) -> usize {
        self.data(None).map_or(0, <[u8]>::len)
    }
}

/// Generates `count` small text attachments (plain text, Markdown, CSV and JSON in turn) with ids
/// from `first_id` on `containers` (id, creation date).
pub fn generate_attachments(
    seed: u64,
    first_id: u64,
    count: usize,
    containers: &[(u64, DateTime<Utc>)],
) -> Vec<SimAttachment> {
    let mut rng = SplitMix64::derive(seed, &[0xa77a]);
    if containers.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|index| {
            let id = first_id + index as u64;
            let (container_id, container_created) = *rng.pick(containers);
            let created_at =
                container_created + Duration::minutes(1 + rng.below(60 * 24 * 30) as i64);
            let words = 20 + rng.below(60);
            let text = sentence(&mut rng, words);
            let (title, media_type, data) = match index % 4 {
                0 => (format!("notes-{id}.txt"), "text/plain", text),
                1 => (
                    format!("readme-{id}.md"),
                    "text/markdown",
                    format!("# Notes {id}\n\n{text}\n"),
                ),
                2 => (
                    format!("table-{id}.csv"),
                    "text/csv",
                    format!("name,value\nrow {id},{}\n", text.replace(',', " ")),
                ),
                _ => (
                    format!("data-{id}.json"),
                    "application/json",
                    serde_json::json!({"id": id, "summary": text}).to_string(),
                ),
            };
            SimAttachment {
                id,
                container_id,
                title,
                media_type: media_type.to_owned(),
                version: 1,
                created_at,
                modified_at: created_at,
                author: rng.below(USERS.len()),
                trashed: false,
                versions: vec![data.into_bytes()],
            }
        })
        .collect()
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a body may link to: other pages' titles and the space key.
pub struct LinkTargets<'a> {
    pub space_key: &'a str,
    pub titles: &'a [(u64, &'a str)],
    /// The title an include macro names: a snippet page (as teams include snippets, not whole
    /// pages), or none.
    pub include: Option<&'a str>,
}

/// Renders the storage-format body of `page` at its current version. Bodies cycle through every
/// construct the converter must handle (DESIGN §5 and the storage samples), starting at a
/// page-dependent block, until they reach the page's target size.
pub fn render_body(seed: u64, page: &SimPage, targets: &LinkTargets<'_>) -> String {
    if let Some(body) = &page.body {
        return body.clone();
    }
    let mut rng = SplitMix64::derive(seed, &[page.id, page.version]);
    let mut out = String::with_capacity(page.body_target + 4096);
    let mut block = rng.below(BLOCKS);
    let mut n = 0u64;
    while out.len() < page.body_target {
        render_block(&mut out, block, &mut rng, page, targets, n);
        block = (block + 1) % BLOCKS;
        n += 1;
    }
    out
}

const BLOCKS: usize = 18;

fn sentence(rng: &mut SplitMix64, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick::<&str>(WORDS));
    }
    if let Some(first) = s.get(..1) {
        let upper = first.to_ascii_uppercase();
        s.replace_range(..1, &upper);
    }
    s.push('.');
    s
}

fn uuid_like(rng: &mut SplitMix64) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn render_block(
    out: &mut String,
    block: usize,
    rng: &mut SplitMix64,
    page: &SimPage,
    targets: &LinkTargets<'_>,
    n: u64,
) {
    let key = targets.space_key;
    // `write!` into a String cannot fail; the results are ignored deliberately.
    let _ = match block {
        0 => write!(
            out,
            "<h{level}>{topic} {n}</h{level}><p>{s1} <strong>{w}</strong> {s2} <em>{s3}</em> <code>{w}_{n}</code> <a href=\"https://example.com/docs/{n}\">external docs</a>.</p>",
            level = 1 + rng.below(3),
            topic = xml_escape(rng.pick::<&str>(TOPICS)),
            s1 = sentence(rng, 12),
            w = rng.pick(WORDS),
            s2 = sentence(rng, 20),
            s3 = sentence(rng, 6),
        ),
        1 => {
            let language = rng.pick(LANGUAGES);
            let mut code = String::new();
            for line in 0..(4 + rng.below(30)) {
                let _ = writeln!(
                    code,
                    "let {}_{line} = compute(\"{}\", {line}); // {}",
                    rng.pick(WORDS),
                    rng.pick(WORDS),
                    sentence(rng, 4)
                );
            }
            write!(
                out,
                "<ac:structured-macro ac:name=\"code\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"language\">{language}</ac:parameter><ac:parameter ac:name=\"title\">Example {n}</ac:parameter><ac:parameter ac:name=\"linenumbers\">true</ac:parameter><ac:plain-text-body><![CDATA[{code}]]></ac:plain-text-body></ac:structured-macro>",
                id = uuid_like(rng),
            )
        }
        2 => write!(
            out,
            "<ac:structured-macro ac:name=\"{panel}\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"title\">{title}</ac:parameter><ac:rich-text-body><p>{s}</p></ac:rich-text-body></ac:structured-macro>",
            panel = rng.pick(PANELS),
            id = uuid_like(rng),
            title = sentence(rng, 3),
            s = sentence(rng, 25),
        ),
        3 => write!(
            out,
            "<ac:structured-macro ac:name=\"panel\" ac:schema-version=\"1\"><ac:parameter ac:name=\"panelIconId\">1f642</ac:parameter><ac:parameter ac:name=\"panelIcon\">:slight_smile:</ac:parameter><ac:parameter ac:name=\"panelIconText\">&#128578;</ac:parameter><ac:parameter ac:name=\"bgColor\">#FFF0B3</ac:parameter><ac:rich-text-body><p>A <em>custom panel</em>: {s}</p></ac:rich-text-body></ac:structured-macro>",
            s = sentence(rng, 18),
        ),
        4 => write!(
            out,
            "<ac:structured-macro ac:name=\"expand\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"title\">Details {n}</ac:parameter><ac:rich-text-body><p>{s}</p><ac:structured-macro ac:name=\"code\" ac:schema-version=\"1\"><ac:parameter ac:name=\"language\">bash</ac:parameter><ac:plain-text-body><![CDATA[curl -s https://example.com/api/{n} | jq .]]></ac:plain-text-body></ac:structured-macro></ac:rich-text-body></ac:structured-macro>",
            id = uuid_like(rng),
            s = sentence(rng, 30),
        ),
        5 => write!(
            out,
            "<p>Status: <ac:structured-macro ac:name=\"status\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"colour\">{colour}</ac:parameter><ac:parameter ac:name=\"title\">{title}</ac:parameter></ac:structured-macro> {s}</p>",
            id = uuid_like(rng),
            colour = rng.pick(STATUS_COLOURS),
            title = ["DONE", "IN PROGRESS", "BLOCKED", "TODO"][rng.below(4)],
            s = sentence(rng, 10),
        ),
        6 => write!(
            out,
            "<p>Tracked in <ac:structured-macro ac:name=\"jira\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"server\">System JIRA</ac:parameter><ac:parameter ac:name=\"serverId\">a1b2c3d4-0000-1111-2222-333344445555</ac:parameter><ac:parameter ac:name=\"key\">{project}-{issue}</ac:parameter></ac:structured-macro>. {s}</p>",
            id = uuid_like(rng),
            project = ["ENG", "OPS", "SEC", "PAY"][rng.below(4)],
            issue = 1 + rng.below(4000),
            s = sentence(rng, 12),
        ),
        7 => {
            out.push_str("<ac:task-list>");
            for task in 0..(2 + rng.below(4)) {
                let _ = write!(
                    out,
                    "<ac:task><ac:task-id>{task}</ac:task-id><ac:task-uuid>{uuid}</ac:task-uuid><ac:task-status>{status}</ac:task-status><ac:task-body><span class=\"placeholder-inline-tasks\">{s}</span></ac:task-body></ac:task>",
                    uuid = uuid_like(rng),
                    status = if rng.below(2) == 0 {
                        "complete"
                    } else {
                        "incomplete"
                    },
                    s = sentence(rng, 8),
                );
            }
            write!(out, "</ac:task-list>")
        }
        8 => {
            out.push_str("<table data-layout=\"default\" data-table-width=\"760\"><colgroup><col style=\"width: 200.0px;\" /><col style=\"width: 280.0px;\" /><col style=\"width: 280.0px;\" /></colgroup><tbody><tr><th><p>Name</p></th><th style=\"text-align: center;\"><p>Owner</p></th><th style=\"text-align: right;\"><p>Value</p></th></tr>");
            for row in 0..(2 + rng.below(8)) {
                let _ = write!(
                    out,
                    "<tr><td><p>{w}-{row}</p></td><td style=\"text-align: center;\"><p>{owner}</p></td><td style=\"text-align: right;\"><p>{value}</p></td></tr>",
                    w = rng.pick(WORDS),
                    owner = xml_escape(rng.pick(USERS).1),
                    value = rng.below(10_000),
                );
            }
            write!(out, "</tbody></table>")
        }
        9 => {
            let (id, title) = if targets.titles.is_empty() {
                (page.id, page.title.as_str())
            } else {
                *rng.pick(targets.titles)
            };
            write!(
                out,
                "<p>See <ac:link><ri:page ri:space-key=\"{key}\" ri:content-title=\"{title}\" /><ac:plain-text-link-body><![CDATA[{title}]]></ac:plain-text-link-body></ac:link> (page {id}) and <ac:link ac:anchor=\"section-{n}\"><ri:page ri:content-title=\"{title}\" /><ac:link-body>its section</ac:link-body></ac:link>.</p>",
                key = xml_escape(key),
                title = xml_escape(title),
            )
        }
        10 => {
            let (account, name) = rng.pick(USERS);
            write!(
                out,
                "<p>Owner: <ac:link><ri:user ri:account-id=\"{account}\" /></ac:link> ({name}). {s}</p>",
                s = sentence(rng, 10),
            )
        }
        11 => write!(
            out,
            "<ac:image ac:align=\"center\" ac:layout=\"center\" ac:original-width=\"1200\" ac:original-height=\"800\" ac:width=\"760\" ac:alt=\"diagram {n}\"><ri:attachment ri:filename=\"diagram-{n}.png\" /><ac:caption><p>Figure {n}: {s}</p></ac:caption></ac:image><p><ac:image ac:height=\"120\"><ri:url ri:value=\"https://example.com/images/logo-{n}.svg\" /></ac:image></p>",
            s = sentence(rng, 6),
        ),
        12 => write!(
            out,
            "<ac:layout><ac:layout-section ac:type=\"two_equal\" ac:breakout-mode=\"default\"><ac:layout-cell><p>{a}</p></ac:layout-cell><ac:layout-cell><p>{b}</p></ac:layout-cell></ac:layout-section><ac:layout-section ac:type=\"fixed-width\" ac:breakout-mode=\"default\"><ac:layout-cell><p>{c}</p></ac:layout-cell></ac:layout-section></ac:layout>",
            a = sentence(rng, 15),
            b = sentence(rng, 15),
            c = sentence(rng, 15),
        ),
        13 => {
            let (name, short, id) = rng.pick(EMOTICONS);
            write!(
                out,
                "<p>{s} <ac:emoticon ac:name=\"{name}\" ac:emoji-shortname=\"{short}\" ac:emoji-id=\"{id}\" ac:emoji-fallback=\"{short}\" /> <ac:emoticon ac:name=\"tick\" /></p>",
                s = sentence(rng, 9),
            )
        }
        // One include per body: a page pulls a snippet in once, not at every screenful.
        14 if n < BLOCKS as u64 && targets.include.is_some() => write!(
            out,
            "<p><ac:structured-macro ac:name=\"include\" ac:schema-version=\"1\" ac:macro-id=\"{id}\"><ac:parameter ac:name=\"\"><ac:link><ri:page ri:space-key=\"{key}\" ri:content-title=\"{title}\" /></ac:link></ac:parameter></ac:structured-macro></p>",
            id = uuid_like(rng),
            key = xml_escape(key),
            title = xml_escape(targets.include.unwrap_or_default()),
        ),
        14 => write!(out, "<p>{s}</p>", s = sentence(rng, 16)),
        15 => write!(
            out,
            "<ul><li><p>{a}</p><ol><li><p>{b}</p></li><li><p>{c}</p></li></ol></li><li><p>{d}</p></li></ul><blockquote><p>{e}</p></blockquote><hr />",
            a = sentence(rng, 8),
            b = sentence(rng, 8),
            c = sentence(rng, 8),
            d = sentence(rng, 8),
            e = sentence(rng, 14),
        ),
        16 => write!(
            out,
            "<ac:structured-macro ac:name=\"toc\" ac:schema-version=\"1\"><ac:parameter ac:name=\"maxLevel\">3</ac:parameter></ac:structured-macro><h2>Section {n}<ac:structured-macro ac:name=\"anchor\" ac:schema-version=\"1\"><ac:parameter ac:name=\"\">section-{n}</ac:parameter></ac:structured-macro></h2><ac:structured-macro ac:name=\"children\" ac:schema-version=\"2\"><ac:parameter ac:name=\"all\">true</ac:parameter></ac:structured-macro><ac:structured-macro ac:name=\"noformat\" ac:schema-version=\"1\"><ac:plain-text-body><![CDATA[{s}\n  preformatted & <kept>]]></ac:plain-text-body></ac:structured-macro>",
            s = sentence(rng, 10),
        ),
        _ => write!(
            out,
            "<p>{a} <ac:inline-comment-marker ac:ref=\"{id}\">{b}</ac:inline-comment-marker> {c}&nbsp;&mdash; Grüße, naïve café.</p>",
            id = uuid_like(rng),
            a = sentence(rng, 10),
            b = sentence(rng, 5),
            c = sentence(rng, 10),
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let a = generate_pages(42, 1, 600, 2);
        let b = generate_pages(42, 1, 600, 2);
        let c = generate_pages(43, 1, 600, 2);
        assert_eq!(a.len(), 600);
        let titles =
            |p: &BTreeMap<u64, SimPage>| p.values().map(|p| p.title.clone()).collect::<Vec<_>>();
        assert_eq!(titles(&a), titles(&b));
        assert_ne!(titles(&a), titles(&c));
        let depth = |id: u64| {
            let mut d = 1;
            let mut cur = a[&id].parent_id;
            while let Some(p) = cur {
                d += 1;
                cur = a[&p].parent_id;
            }
            d
        };
        let depths: Vec<u8> = a.keys().map(|id| depth(*id)).collect();
        assert_eq!(depths.iter().max(), Some(&MAX_DEPTH));
        assert_eq!(a.values().filter(|p| p.body_target > 1_000_000).count(), 2);
        let mut unique = titles(&a);
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 600, "titles are unique in a space");
    }

    #[test]
    fn bodies_use_every_construct_and_change_with_the_version() {
        let mut pages = generate_pages(7, 1, 50, 1);
        let titles: Vec<(u64, String)> = pages.values().map(|p| (p.id, p.title.clone())).collect();
        let refs: Vec<(u64, &str)> = titles.iter().map(|(id, t)| (*id, t.as_str())).collect();
        let targets = LinkTargets {
            space_key: "ENG",
            titles: &refs,
            include: refs.first().map(|(_, title)| *title),
        };
        let mut page = pages.remove(&(FIRST_PAGE_ID + 3)).expect("page");
        page.body_target = 60_000;
        let body = render_body(7, &page, &targets);
        for construct in [
            "ac:name=\"code\"",
            "ac:name=\"language\"",
            "ac:name=\"info\"",
            "ac:name=\"panel\"",
            "ac:name=\"expand\"",
            "ac:name=\"status\"",
            "ac:name=\"jira\"",
            "<ac:task-list>",
            "<table",
            "<ri:page",
            "<ri:user",
            "<ac:image",
            "<ri:attachment",
            "<ac:layout>",
            "<ac:emoticon",
            "ac:name=\"include\"",
            "ac:name=\"toc\"",
            "ac:name=\"anchor\"",
            "ac:name=\"noformat\"",
            "<ac:inline-comment-marker",
            "<![CDATA[",
        ] {
            assert!(body.contains(construct), "missing {construct}");
        }
        assert_eq!(render_body(7, &page, &targets), body);
        page.version += 1;
        assert_ne!(render_body(7, &page, &targets), body);
    }
}
