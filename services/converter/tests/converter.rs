//! Integration tests of the converter library and its stage.

#[path = "converter/golden.rs"]
mod golden;
#[path = "converter/includes.rs"]
mod includes;
#[path = "converter/limits.rs"]
mod limits;
#[path = "converter/page.rs"]
mod page;
#[path = "converter/properties.rs"]
mod properties;
#[path = "converter/service.rs"]
mod service;
#[path = "converter/support.rs"]
mod support;
#[path = "converter/xss.rs"]
mod xss;
