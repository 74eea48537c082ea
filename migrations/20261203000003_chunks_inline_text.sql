-- With the vector inline (STORAGE MAIN, 1.5 KB at 384 dimensions) a chunk row passes the default
-- 2 KB TOAST threshold, so Postgres moved `text` and `tsv` out of line: every `@@` recheck,
-- `ts_rank_cd` and `ts_headline` read the TOAST table as well. Keeping rows whole up to a page
-- (measured on 20,000 bench chunks: TOAST 27 MB → 0, heap 39 → 73 MB; shared buffers touched per
-- search, unfiltered 7,238 → 4,352, mention filter 2,490 → 862, updated_after 21,025 → 15,596).
-- Rows written before this migration stay as they are until rewritten (a replay, VACUUM FULL).
ALTER TABLE chunks SET (toast_tuple_target = 8160);
