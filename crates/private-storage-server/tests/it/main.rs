//! The server's integration tests, one binary (one link step) with a module per subject.

mod app;
mod audit;
mod browser;
mod caches;
mod cli;
mod common;
mod encryption;
mod links;
mod oidc;
mod quotas;
mod requests;
mod s3;
mod scale_out;
mod scanning;
mod socket;
mod tus;
mod tus_clients;
mod webhooks;
