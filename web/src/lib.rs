//! The page (Leptos, issue 4) will live here; for now the crate proves `shared` links for wasm
//! and holds [`markdown`], the safe Markdown subset answers are rendered with.

pub mod markdown;
