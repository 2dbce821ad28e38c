//! Who may read what: identities, the [`PrivateFile`] a rule sees, and the rules.

mod rules;

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use tokio::sync::OnceCell;

pub use rules::{
    AccessRule, AllowAuthenticated, AllowStaff, AllowSuperuser, allow_authenticated, allow_staff, allow_superuser,
};

use crate::{ObjectKey, ObjectMeta, Result, Storage};

/// Who is asking, as the application's own authentication layer knows it.
///
/// This crate does not authenticate anyone. The application's auth layer (sessions, bearer
/// tokens, mTLS...) puts a [`CurrentUser`] into the request extensions; access rules read it
/// back through [`PrivateFile::user`]. A request without one is anonymous.
///
/// ```
/// use private_storage::{CurrentUser, Identity};
///
/// struct Member { name: String, admin: bool }
///
/// impl Identity for Member {
///     fn id(&self) -> &str { &self.name }
///     fn is_staff(&self) -> bool { self.admin }
/// }
///
/// // In a middleware, after checking the session or token:
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(CurrentUser::new(Member { name: "ada".into(), admin: false }));
/// ```
///
/// With axum, a `middleware::from_fn` that resolves the cookie or `Authorization` header and
/// inserts the `CurrentUser` before the file service runs is all it takes (see the crate's
/// example `demo`).
pub trait Identity: Send + Sync + 'static {
    /// A stable identifier of the user (a database id, a username...).
    fn id(&self) -> &str;
    /// Whether the user is logged in. Defaults to `true`: an identity usually means a login.
    fn is_authenticated(&self) -> bool {
        true
    }
    /// Whether the user is staff. Defaults to `false`.
    fn is_staff(&self) -> bool {
        false
    }
    /// Whether the user is a superuser. Defaults to `false`.
    fn is_superuser(&self) -> bool {
        false
    }
}

/// The identity of a request, put into its extensions by the application's auth layer.
#[derive(Clone)]
pub struct CurrentUser(Arc<dyn Identity>);

impl CurrentUser {
    /// Wraps an identity.
    pub fn new(identity: impl Identity) -> Self {
        Self(Arc::new(identity))
    }

    /// Wraps an already shared identity.
    pub fn from_arc(identity: Arc<dyn Identity>) -> Self {
        Self(identity)
    }
}

impl Deref for CurrentUser {
    type Target = dyn Identity;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentUser")
            .field("id", &self.id())
            .field("authenticated", &self.is_authenticated())
            .field("staff", &self.is_staff())
            .field("superuser", &self.is_superuser())
            .finish()
    }
}

/// A ready-made [`Identity`] for applications that need nothing more.
///
/// ```
/// use private_storage::{Identity, User};
///
/// let admin = User::new("1").staff().superuser();
/// assert!(admin.is_staff() && admin.is_superuser());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    id: String,
    staff: bool,
    superuser: bool,
}

impl User {
    /// An authenticated user who is neither staff nor superuser.
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into(), staff: false, superuser: false }
    }

    /// Marks the user as staff.
    pub fn staff(mut self) -> Self {
        self.staff = true;
        self
    }

    /// Marks the user as superuser.
    pub fn superuser(mut self) -> Self {
        self.superuser = true;
        self
    }
}

impl Identity for User {
    fn id(&self) -> &str {
        &self.id
    }
    fn is_staff(&self) -> bool {
        self.staff
    }
    fn is_superuser(&self) -> bool {
        self.superuser
    }
}

/// The file a request asks for, as an [`AccessRule`] sees it.
///
/// It carries the request (method, URI, headers, extensions with the [`CurrentUser`]), the
/// storage, the canonical [`ObjectKey`] — the very value the storage will be asked for — and,
/// for downloads by record, the parent record. Metadata is fetched lazily, at most once per
/// request, and reused by [`PrivateFile::exists`], the rule and the response.
///
/// Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct PrivateFile(Arc<Inner>);

struct Inner {
    request: Parts,
    storage: Arc<dyn Storage>,
    key: ObjectKey,
    parent: Option<Arc<dyn Any + Send + Sync>>,
    /// Small files are read together with their metadata, up to this many bytes.
    inline_max: u64,
    /// The metadata (and a small file's bytes), or `None` for a missing file.
    meta: OnceCell<Option<(ObjectMeta, Option<Bytes>)>>,
}

impl fmt::Debug for PrivateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateFile")
            .field("key", &self.0.key)
            .field("storage", &self.0.storage)
            .field("user", &self.0.request.extensions.get::<CurrentUser>())
            .field("has_parent", &self.0.parent.is_some())
            .finish()
    }
}

impl PrivateFile {
    /// The file `key` of `storage`, asked for by the request `request`.
    pub fn new(request: Parts, storage: Arc<dyn Storage>, key: ObjectKey) -> Self {
        Self::with_parent(request, storage, key, None)
    }

    /// Like [`PrivateFile::new`], with the record the file belongs to (downloads by record).
    pub fn with_parent(
        request: Parts,
        storage: Arc<dyn Storage>,
        key: ObjectKey,
        parent: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Self {
        Self::for_service(request, storage, key, parent, 0)
    }

    /// A file for the file service, which reads small files (up to `inline_max` bytes) in
    /// the same round trip as their metadata.
    pub(crate) fn for_service(
        request: Parts,
        storage: Arc<dyn Storage>,
        key: ObjectKey,
        parent: Option<Arc<dyn Any + Send + Sync>>,
        inline_max: u64,
    ) -> Self {
        Self(Arc::new(Inner { request, storage, key, parent, inline_max, meta: OnceCell::new() }))
    }

    /// The request (without its body).
    pub fn request(&self) -> &Parts {
        &self.0.request
    }

    /// Who is asking, if the application's auth layer said so.
    pub fn user(&self) -> Option<&dyn Identity> {
        self.0.request.extensions.get::<CurrentUser>().map(|u| &**u)
    }

    /// The storage the file lives in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.0.storage
    }

    /// The canonical key: what the storage and every delivery mode will use.
    pub fn key(&self) -> &ObjectKey {
        &self.0.key
    }

    /// The file's absolute path, for storages on the local filesystem.
    pub fn full_path(&self) -> Option<PathBuf> {
        self.0.storage.local_path(&self.0.key)
    }

    /// The content type guessed from the name (`application/octet-stream` when unknown).
    pub fn content_type(&self) -> &'static str {
        guess_content_type(&self.0.key)
    }

    /// The parent record of a download by record, if it is a `T`.
    pub fn parent<T: Any>(&self) -> Option<&T> {
        self.0.parent.as_deref().and_then(|p| (p as &dyn Any).downcast_ref())
    }

    /// The file's metadata, or `None` when no such file exists. Fetched once per request.
    ///
    /// # Errors
    /// When the storage fails for another reason than a missing file (not cached: a later
    /// call asks again).
    pub async fn metadata(&self) -> Result<Option<&ObjectMeta>> {
        Ok(self.load().await?.map(|(meta, _)| meta))
    }

    /// The metadata and, for a small file read with it, the bytes. Fetched once per request.
    pub(crate) async fn load(&self) -> Result<Option<&(ObjectMeta, Option<Bytes>)>> {
        let loaded = self
            .0
            .meta
            .get_or_try_init(|| async {
                match self.0.storage.head_with_bytes(&self.0.key, self.0.inline_max).await {
                    Ok(found) => Ok(Some(found)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(loaded.as_ref())
    }

    /// The bytes of a small file, when they were read with its metadata (same version: one read).
    pub(crate) fn inline_bytes(&self) -> Option<Bytes> {
        self.0.meta.get().and_then(|m| m.as_ref()).and_then(|(_, bytes)| bytes.clone())
    }

    /// Whether the file exists. A storage failure counts as "no" (and is logged), so a rule
    /// that depends on existence fails closed.
    pub async fn exists(&self) -> bool {
        match self.metadata().await {
            Ok(meta) => meta.is_some(),
            Err(e) => {
                tracing::error!(key = %self.0.key, error = %e, "storage failed while checking existence");
                false
            }
        }
    }
}

pub(crate) fn guess_content_type(key: &ObjectKey) -> &'static str {
    mime_guess::from_path(key.file_name()).first_raw().unwrap_or("application/octet-stream")
}
