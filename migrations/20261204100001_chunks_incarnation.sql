-- The incarnation whose chunks were last written, next to `chunks_version`: an includer re-emitted
-- with a changed included page keeps its version, so a late chunk set of the earlier incarnation
-- must not replace the newer one's.
ALTER TABLE confluence_pages ADD COLUMN chunks_incarnation bigint NOT NULL DEFAULT 0;
