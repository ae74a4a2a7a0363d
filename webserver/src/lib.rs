//! Crier's web server, in two parts an operator can tell apart at a glance.
//!
//! **Crier itself** (what an application built on Crier relies on):
//! - [`api`]: the HTTP API — `POST /api/publish`, `GET /api/presence/<facility>`, `/healthz`,
//!   `/readyz`, `/metrics` — and `/static/ws4redis.js`, the ws4redis-compatible client;
//! - [`session`]: the session contract wsserver reads (the `sessionid` cookie and the session
//!   record in Redis), with [`accounts`] and the `webserver users` command ([`users_cli`]) that
//!   manage who may sign in;
//! - [`server`], [`routes`], [`config`], [`store`], [`metrics`], [`http`], [`random`]: the
//!   process around them.
//!
//! **The demo** ([`demo`]): the sign-in page, lobby, tic-tac-toe and admin notice pages, their
//! JSON endpoints and their scripts (`static/demo/`). The sign-in page is the demo's, not
//! Crier's: an application signs its users in its own way (as a Django site does for ws4redis)
//! and writes sessions in the shape [`session`] defines; the demo's page is one such writer.
//! Game and lobby rules ([`demo::game`], [`demo::lobby`]) are pure, free of HTTP types.

pub mod accounts;
pub mod api;
pub mod app;
pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod random;
pub mod routes;
pub mod server;
pub mod session;
pub mod store;
pub mod users_cli;

pub use config::{Command, Config};
pub use server::{run, run_with_admin, RunError};
