//! A Confluence Cloud simulator for tests, benchmarks and the demo.
