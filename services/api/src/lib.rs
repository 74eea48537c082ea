//! Api: sources, sync runs, pages and hybrid search over HTTP.
