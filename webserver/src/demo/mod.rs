//! The example application shipped with Crier: sign-in page, lobby (who is online,
//! invitations), tic-tac-toe games and the admin notice page, with their JSON endpoints and
//! scripts (`static/demo/*.js`, still served as `/static/<name>.js`). It uses Crier only through
//! what any application would: sessions, the store and publishing to channels.

pub mod checks;
pub mod game;
pub mod game_api;
pub mod lobby;
pub mod lobby_api;
pub mod pages;
pub mod routes;
