-- Confluence keeps a page's version when it is restored from the trash: the incarnation (how many
-- times the page came back after a deletion) orders a restore after the tombstone it undoes.
ALTER TABLE confluence_pages ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
