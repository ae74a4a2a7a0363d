//! Crier's web server: pages, login and sessions ([`pages`]), the publish API
//! ([`publish_api`]), accounts ([`accounts`], [`users_cli`]), all over [`store`] in Redis.

pub mod accounts;
pub mod app;
pub mod config;
pub mod game;
pub mod game_api;
pub mod http;
pub mod lobby;
pub mod lobby_api;
pub mod metrics;
pub mod pages;
pub mod presence_api;
pub mod publish_api;
pub mod random;
pub mod routes;
pub mod server;
pub mod store;
pub mod users_cli;

pub use config::{Command, Config};
pub use server::{run, run_with_admin, RunError};
