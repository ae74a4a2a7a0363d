//! The demo's HTML pages. Every page is rendered from [`layout::page`], which sends no inline
//! script or style, so a strict Content-Security-Policy applies. [`chrome`] holds what the live
//! pages share.

pub mod admin;
pub mod chrome;
pub mod game;
pub mod layout;
pub mod lobby;
pub mod login;
