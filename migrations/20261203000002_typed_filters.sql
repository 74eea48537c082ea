-- Filters read typed columns that the store writes from typed fields, not JSONB keys that exist
-- only because of how a struct serialises (DESIGN §4). `metadata` stays for display.
ALTER TABLE confluence_pages
    ADD COLUMN labels    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN jira_keys text[] NOT NULL DEFAULT '{}',
    ADD COLUMN mentions  text[] NOT NULL DEFAULT '{}';

UPDATE confluence_pages SET
    labels = COALESCE(ARRAY(SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(metadata -> 'labels') = 'array' THEN metadata -> 'labels' ELSE '[]' END)), '{}'),
    jira_keys = COALESCE(ARRAY(SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(metadata -> 'jira_issue_links') = 'array' THEN metadata -> 'jira_issue_links' ELSE '[]' END)), '{}'),
    mentions = COALESCE(ARRAY(SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(metadata -> 'user_mentions') = 'array' THEN metadata -> 'user_mentions' ELSE '[]' END)), '{}');

DROP INDEX confluence_pages_jira;
DROP INDEX confluence_pages_mentions;
DROP INDEX confluence_pages_labels;
CREATE INDEX confluence_pages_jira ON confluence_pages USING gin (jira_keys);
CREATE INDEX confluence_pages_mentions ON confluence_pages USING gin (mentions);
CREATE INDEX confluence_pages_labels ON confluence_pages USING gin (labels);

-- Never read: JetStream's ack floor is the consumer's position; the transaction that applies a
-- batch is what makes it durable. (`chunks.metadata` stays: the store writes a code chunk's block,
-- language and title, there and search filters on it.)
DROP TABLE projection_checkpoints;
