-- Keep vectors in the heap row rather than out of line (TOAST): exact scans over a filtered set of
-- chunks read them without a detour (measured by ops/bench/search: 298 ms → 18–43 ms).
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN;
