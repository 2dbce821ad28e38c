//! The library's integration tests, one binary (one link step) with a module per subject.

#[macro_use]
mod common;
mod apache;
#[cfg(feature = "testing")]
mod conformance;
#[cfg(all(feature = "encryption", feature = "testing"))]
mod encryption;
mod faults;
mod http;
mod nginx;
mod oracle;
mod records;
#[cfg(all(feature = "testing", feature = "s3"))]
mod s3;
#[cfg(feature = "clamav")]
mod scan;
mod share;
mod share_browser;
mod streaming;
mod traversal;
#[cfg(feature = "tus")]
mod tus;
mod uploads;
