//! The private-storage server, built only on the `private-storage` library's public API.
//!
//! The layers, and the one direction calls go (see the README's Architecture section):
//!
//! - front-ends: [`http`] (pages and the JSON API) and [`cli`] — they parse a request into a
//!   call to the domain and turn its answer or [`domain::Error`] into their medium;
//! - [`domain`]: every operation and the access decisions, over
//! - [`db`] (the database) and the library's storage and services, which
//! - [`state`] builds once from the [`config`].
//!
//! [`server::serve`] runs the HTTP front-end on a socket, with the server's own background
//! work (staging sweep, expiry purge).

pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
mod logging;
pub mod metrics;
pub mod push;
pub mod server;
pub mod sso;
pub mod state;

pub use config::{Config, ConfigError, Loader};
pub use http::app;
pub use server::serve;
pub use state::{AppState, Backend, StartError};
