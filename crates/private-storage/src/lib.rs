//! Private file storage: files kept out of public reach, served only to the requests an
//! access rule allows, with complete HTTP semantics.
//!
//! (The crate guide is expanded below the module list.)

mod access;
mod error;
mod http;
mod key;
mod storage;

#[cfg(feature = "testing")]
pub mod testing;

pub use access::{
    AccessRule, AllowAuthenticated, AllowStaff, AllowSuperuser, CurrentUser, Identity, PrivateFile, User,
    allow_authenticated, allow_staff, allow_superuser,
};
pub use error::{BoxError, Error, Result};
pub use http::{
    ContentDisposition, DeliverFile, Delivery, OnDenied, Prepared, ResponseBody, ServePrivate, X_ACCEL_REDIRECT,
    X_SENDFILE, nginx_internal_location,
};
pub use key::{KeyError, MAX_KEY_LEN, MAX_SEGMENT_LEN, ObjectKey};
pub use storage::{
    ByteStream, DEFAULT_BASE_URL, Fault, GetOptions, GetResult, LocalStorage, MemoryStorage, ObjectMeta, Payload,
    PutMode, PutOptions, Storage, StorageExt,
};
