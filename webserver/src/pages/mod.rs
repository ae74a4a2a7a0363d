//! HTML pages. Every page is rendered from [`layout::page`], which sends no inline script or
//! style, so a strict Content-Security-Policy applies.

pub mod layout;
pub mod home;
pub mod login;
pub mod session;
