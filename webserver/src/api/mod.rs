//! The product's HTTP API, what an application built on Crier calls: [`publish`] (bearer-token
//! publishing to any audience), [`presence`] (who is online on a facility) and [`health`]
//! (`/healthz`, `/readyz`, `/metrics`).

pub mod health;
pub mod presence;
pub mod publish;
