-- Blog posts are indexed beside pages (ids are unique across Confluence's content types): each
-- row says which it is, in Confluence's own type names. Rows written before are pages.
ALTER TABLE confluence_pages
    ADD COLUMN content_type text NOT NULL DEFAULT 'page'
        CONSTRAINT confluence_pages_content_type CHECK (content_type IN ('page', 'blogpost'));
