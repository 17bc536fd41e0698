//! The console's look and words: translations and the embedded stylesheet.
//! Templates live in `appliance/ui/templates` and are compiled into abrid by askama.

pub mod i18n;

pub const STYLESHEET: &str = include_str!("../../../ui/static/abri.css");
