//! Confluence REST client (Cloud and Data Center): CQL search, v2 pages and spaces, retries and rate limits.
