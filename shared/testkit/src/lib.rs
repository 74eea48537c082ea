//! Test support: connections to the dev stack, fresh databases, isolated bus namespaces.
