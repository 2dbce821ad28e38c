//! File requests: upload-only links. Whoever holds one can upload into its owner's files —
//! with an optional password, until it expires, within `max_files`, `max_bytes` and the types
//! it allows, through the same checks as every other upload (the owner's quota, the upload
//! policy, scanning) — and learns nothing: not what was uploaded before, not whether a name
//! exists, not where the file went. The owner sees each upload with the name and e-mail the
//! uploader gave, the time and the address.

use std::net::IpAddr;

use private_storage::Upload;

use super::accounts::{hash_off_the_workers, random_token, sha256_hex, verify_off_the_workers};
use super::audit::Event;
use super::files::Owner;
use super::{Actor, Domain, Error, Result};
use crate::db::{RequestRow, RequestUpload, new_id, now};

/// What a new file request should be.
#[derive(Clone, Default, serde::Deserialize)]
pub struct NewRequest {
    /// What the uploaders are asked for ("Receipts for March").
    pub title: String,
    /// How long it takes uploads (default: `share_default_lifetime`).
    pub expires: Option<String>,
    /// A password the uploaders need.
    pub password: Option<String>,
    /// How many files it takes.
    pub max_files: Option<u64>,
    /// How many bytes in all (`100MiB`).
    pub max_bytes: Option<String>,
    /// The types it takes (`application/pdf`, `image/*`; default: the server's).
    #[serde(default)]
    pub content_types: Vec<String>,
}

impl std::fmt::Debug for NewRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRequest").field("title", &self.title).field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// What an uploader says about themselves, and the password if the request has one.
#[derive(Clone, Default)]
pub struct Uploader {
    /// Their name.
    pub name: String,
    /// Their e-mail address.
    pub email: String,
    /// The request's password, as given.
    pub password: Option<String>,
}

/// The longest name or address an uploader may give.
const MAX_UPLOADER_TEXT: usize = 200;

impl Domain {
    /// Creates a file request for the actor's files; the request and its URL (`/r/<token>`,
    /// shown once: only its hash is kept).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed value; [`Error::Policy`] for a lifetime above
    /// `share_max_lifetime` or a password too short; the database's.
    pub async fn create_request(&self, actor: &Actor, new: &NewRequest) -> Result<(RequestRow, String)> {
        let Actor::User(user) = actor else {
            return Err(Error::Invalid("File requests belong to a user.".into()));
        };
        let title = new.title.trim();
        if title.is_empty() || title.chars().count() > MAX_UPLOADER_TEXT {
            return Err(Error::Invalid("title: say what you ask for, in 200 characters at most.".into()));
        }
        let lifetime = self.lifetime(new.expires.as_deref(), "requests may stay open")?;
        let password = new.password.as_deref().filter(|p| !p.is_empty());
        if password.is_some_and(|p| p.chars().count() < 6) {
            return Err(Error::Policy("password: at least 6 characters.".into()));
        }
        let max_bytes = match new.max_bytes.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            Some(size) => Some(
                crate::config::parse_size(size)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Error::Invalid("max_bytes: a size such as 100MiB.".into()))?,
            ),
            None => None,
        };
        if new.max_files == Some(0) {
            return Err(Error::Policy("max_files: at least 1 (or none for no limit).".into()));
        }
        let types: Vec<String> =
            new.content_types.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        if let Some(bad) = types.iter().find(|t| !t.contains('/') || t.contains(',')) {
            return Err(Error::Invalid(format!("content_types: {bad:?} is not a media type such as image/*.")));
        }
        let password_hash = match password {
            Some(password) => Some(hash_off_the_workers(password.to_owned()).await?),
            None => None,
        };
        let token = random_token(32);
        let created = now();
        let row = RequestRow {
            id: new_id(),
            owner_id: user.id.clone(),
            title: title.to_owned(),
            password_hash,
            expires: created + lifetime.as_secs() as i64,
            max_files: new.max_files.map(|n| n as i64),
            max_bytes: max_bytes.map(|n| n as i64),
            content_types: types.join(","),
            files: 0,
            bytes: 0,
            revoked: false,
            created,
        };
        self.db.insert_request(&row, &sha256_hex(&token)).await?;
        self.audit.record(Event::by("request_created", actor).detail(format!("request={} title={title}", row.id)));
        Ok((row, format!("/r/{token}")))
    }

    /// The actor's file requests (staff: everyone's) with their uploads, newest first.
    ///
    /// # Errors
    /// The database's.
    pub async fn requests_of(&self, actor: &Actor) -> Result<Vec<(RequestRow, Vec<RequestUpload>)>> {
        let mut out = Vec::new();
        for request in self.db.requests(actor.scope()).await? {
            let uploads = self.db.request_uploads(&request.id).await?;
            out.push((request, uploads));
        }
        Ok(out)
    }

    /// Closes one of the actor's requests.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the database's.
    pub async fn close_request(&self, actor: &Actor, id: &str) -> Result<()> {
        let request = self.db.request(id, actor.scope()).await?.ok_or(Error::NotFound("file request"))?;
        self.db.revoke_request(&request.id).await?;
        self.audit.record(Event::by("request_closed", actor).detail(format!("request={}", request.id)));
        Ok(())
    }

    /// The open request of a token, for its upload page.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown token, or a request closed or expired (the same
    /// answer); the database's.
    pub async fn open_request(&self, token: &str) -> Result<RequestRow> {
        let request = self.db.request_by_token(&sha256_hex(token)).await?;
        request.filter(RequestRow::open).ok_or(Error::NotFound("file request"))
    }

    /// Stores an upload through the request of `token`. `read` is the front-end's part: it
    /// reads the form up to the file (what the uploader says, then the file's stream); the
    /// password is checked before a byte of the file is read. `bound` is the request's length.
    /// The uploader is told the name and size it was received under, nothing else.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a request that is not open; [`Error::WrongCredentials`],
    /// [`Error::TooManyAttempts`]; [`Error::Invalid`] for a missing name or address;
    /// [`Error::Policy`] past `max_files` or `max_bytes`; the upload's refusals.
    pub async fn upload_to_request<'a>(
        &self,
        token: &str,
        client: Option<IpAddr>,
        bound: Option<u64>,
        read: impl Future<Output = Result<(Uploader, Upload<'a>)>>,
    ) -> Result<(String, u64)> {
        let request = self.open_request(token).await?;
        let actor = format!("request:{}", request.id);
        let result = self.request_upload(&request, client, bound, read).await;
        match &result {
            Ok((name, size)) => {
                self.metrics.uploaded();
                tracing::info!(request = %request.id, name, size, "file received through a file request");
            }
            Err(e) => {
                self.metrics.rejected(e.upload_reason());
                let kind = if matches!(e, Error::OverQuota(_)) { "quota_refused" } else { "upload_refused" };
                self.audit.record(Event::new(kind, actor).status(e.status().as_u16()).detail(e.message()));
            }
        }
        result
    }

    async fn request_upload<'a>(
        &self,
        request: &RequestRow,
        client: Option<IpAddr>,
        bound: Option<u64>,
        read: impl Future<Output = Result<(Uploader, Upload<'a>)>>,
    ) -> Result<(String, u64)> {
        let (uploader, upload) = read.await?;
        if let Some(hash) = &request.password_hash {
            let key = format!("request:{}", request.id);
            if !self.link_limiter.reserve(&key, client) {
                return Err(Error::TooManyAttempts);
            }
            let given = uploader.password.clone().unwrap_or_default();
            if !verify_off_the_workers(given, hash.clone()).await? {
                return Err(Error::WrongCredentials);
            }
            self.link_limiter.succeeded(&key, client);
        }
        let (name, email) = (uploader.name.trim(), uploader.email.trim());
        if name.is_empty() || name.chars().count() > MAX_UPLOADER_TEXT {
            return Err(Error::Invalid("Give your name (200 characters at most).".into()));
        }
        if !email.contains('@') || email.chars().count() > MAX_UPLOADER_TEXT || email.contains(char::is_whitespace) {
            return Err(Error::Invalid("Give your e-mail address.".into()));
        }
        let Some(bound) = bound else {
            return Err(Error::Invalid("Send the upload with its Content-Length.".into()));
        };
        if !self.db.take_request_room(&request.id, bound as i64).await? {
            return Err(Error::Policy(match (request.max_files, request.max_bytes) {
                (Some(max), _) if request.files >= max => format!("This request takes {max} file(s), and has them."),
                _ => "This file would pass what this request takes in all.".to_owned(),
            }));
        }
        let stored = async {
            let hold = self.hold_plain(&request.owner_id, upload.announced_len().or(Some(bound))).await?;
            let mut policy = (*self.policy).clone();
            if !request.content_types.is_empty() {
                policy = policy.content_types(request.content_types.split(',').map(str::to_owned));
            }
            let left = request.max_bytes.map(|max| (max - request.bytes).max(0) as u64);
            let limit = [hold.as_ref().map(|h| h.limit), left].into_iter().flatten().min();
            let upload = match limit {
                Some(limit) => upload.limit(limit),
                None => upload,
            };
            let saved = policy.save(&Owner(request.owner_id.clone()), upload).await?;
            let row = self.record(&request.owner_id, &saved, hold.as_ref().map(|h| h.id.as_str())).await?;
            if let Some(hold) = hold {
                hold.keep();
            }
            let address = client.map(|ip| ip.to_string());
            self.db.insert_request_upload(&row.id, &request.id, name, email, address.as_deref()).await?;
            Ok::<_, Error>(row)
        }
        .await;
        match stored {
            Ok(row) => {
                // The room taken was the request's length: give back what the file did not use.
                self.db.give_back_request_room(&request.id, 0, bound as i64 - row.size).await?;
                let event = Event::new("upload", format!("request:{}", request.id)).file(&row);
                self.audit.record(event.bytes(Some(row.size as u64)).detail(format!("from {name} <{email}>")));
                Ok((row.name, row.size as u64))
            }
            Err(e) => {
                self.db.give_back_request_room(&request.id, 1, bound as i64).await?;
                Err(e)
            }
        }
    }
}
