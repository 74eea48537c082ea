//! Converter: Confluence storage format to clean Markdown plus metadata.
