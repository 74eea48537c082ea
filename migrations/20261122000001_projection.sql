-- The Postgres projection (DESIGN §4). The indexer owns every table; all of them can be rebuilt by
-- replaying the streams (`pagestream replay`).

CREATE EXTENSION IF NOT EXISTS vector;

-- One row per Confluence source. Projected from the sources bucket; credentials stay encrypted.
CREATE TABLE sources (
    id              uuid PRIMARY KEY,
    key             text NOT NULL UNIQUE,
    site_url        text NOT NULL,
    space_key       text NOT NULL,
    auth_kind       text NOT NULL CHECK (auth_kind IN ('cloud', 'data_center')),
    credentials     bytea NOT NULL,
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE confluence_pages (
    source_id        uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    page_id          text NOT NULL,
    space_key        text NOT NULL,
    title            text NOT NULL DEFAULT '',
    -- the newest version seen in any event; a page's state only moves forward
    version          bigint NOT NULL,
    last_modified    timestamptz,
    is_deleted       boolean NOT NULL DEFAULT false,
    -- materialized path of ancestor ids and the page itself: /root/parent/page
    path             text NOT NULL DEFAULT '',
    url              text NOT NULL DEFAULT '',
    -- ancestors, labels, author, jira_issue_links, user_mentions, links, attachments, word_count ...
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    markdown         text,
    -- the versions whose Markdown and chunks are stored (they may lag behind `version`)
    markdown_version bigint,
    chunks_version   bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, page_id)
);

CREATE INDEX confluence_pages_source_live ON confluence_pages (source_id) WHERE NOT is_deleted;
CREATE INDEX confluence_pages_space ON confluence_pages (space_key);
CREATE INDEX confluence_pages_path ON confluence_pages (path text_pattern_ops);
CREATE INDEX confluence_pages_jira ON confluence_pages USING gin ((metadata -> 'jira_issue_links'));
CREATE INDEX confluence_pages_mentions ON confluence_pages USING gin ((metadata -> 'user_mentions'));
CREATE INDEX confluence_pages_labels ON confluence_pages USING gin ((metadata -> 'labels'));

-- array_to_string is only STABLE; joining text with a space is immutable, as a generated column needs.
CREATE FUNCTION pagestream_join_words(words text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(words, ' ');

-- Vectors of different models coexist: `embedding` has no fixed dimension, each row names its model
-- and dimension, and each model gets a partial HNSW index over `embedding::vector(dim)` restricted to
-- its rows (see embedding_models). A query uses the same cast and model predicate, so switching the
-- model is a replay, not a migration.
CREATE TABLE chunks (
    source_id       uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    page_id         text NOT NULL,
    embedding_model text NOT NULL,
    chunk_index     integer NOT NULL,
    page_version    bigint NOT NULL,
    text            text NOT NULL,
    heading_path    text[] NOT NULL DEFAULT '{}',
    content_hash    text NOT NULL,
    token_count     integer NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding_dim   integer NOT NULL,
    embedding       vector NOT NULL,
    tsv             tsvector GENERATED ALWAYS AS (
                        setweight(to_tsvector('english', pagestream_join_words(heading_path)), 'A')
                        || setweight(to_tsvector('english', text), 'B')
                    ) STORED,
    PRIMARY KEY (source_id, page_id, embedding_model, chunk_index)
);

CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

-- Every model whose vectors are stored, with the name of its HNSW index.
CREATE TABLE embedding_models (
    model      text PRIMARY KEY,
    dimension  integer NOT NULL CHECK (dimension > 0 AND dimension <= 16000),
    index_name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The default model's index exists from the start.
CREATE INDEX chunks_embedding_all_minilm_l6_v2 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE embedding_model = 'all-MiniLM-L6-v2';
INSERT INTO embedding_models (model, dimension, index_name)
    VALUES ('all-MiniLM-L6-v2', 384, 'chunks_embedding_all_minilm_l6_v2');

CREATE TABLE sync_runs (
    id                  uuid PRIMARY KEY,
    source_id           uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    mode                text NOT NULL CHECK (mode IN ('full', 'incremental')),
    status              text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    pages_seen          bigint NOT NULL DEFAULT 0,
    pages_changed       bigint NOT NULL DEFAULT 0,
    pages_deleted       bigint NOT NULL DEFAULT 0,
    pages_converted     bigint NOT NULL DEFAULT 0,
    pages_embedded      bigint NOT NULL DEFAULT 0,
    pages_indexed       bigint NOT NULL DEFAULT 0,
    pages_failed        bigint NOT NULL DEFAULT 0,
    confluence_requests bigint NOT NULL DEFAULT 0,
    rate_limit_wait_ms  bigint NOT NULL DEFAULT 0,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    last_error          text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sync_runs_source_started ON sync_runs (source_id, started_at DESC);

-- The last stream sequence applied per stream, written in the same transaction as the data.
CREATE TABLE projection_checkpoints (
    stream          text PRIMARY KEY,
    last_sequence   bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
