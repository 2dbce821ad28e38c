//! File requests: upload-only links, and the uploads that came through them.

use super::rows::{Columns, FromRow};
use super::{Arg, Db, DbResult, now};

/// A file request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RequestRow {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub password_hash: Option<String>,
    pub expires: i64,
    pub max_files: Option<i64>,
    pub max_bytes: Option<i64>,
    /// Allowed types, comma-separated (empty: the server's).
    pub content_types: String,
    pub files: i64,
    pub bytes: i64,
    pub revoked: bool,
    pub created: i64,
}

impl RequestRow {
    /// Whether uploads are still taken.
    pub fn open(&self) -> bool {
        !self.revoked && self.expires > now()
    }
}

impl FromRow for RequestRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            id: row.text("id")?,
            owner_id: row.text("owner_id")?,
            title: row.text("title")?,
            password_hash: row.opt_text("password_hash")?,
            expires: row.int("expires")?,
            max_files: row.opt_int("max_files")?,
            max_bytes: row.opt_int("max_bytes")?,
            content_types: row.text("content_types")?,
            files: row.int("files")?,
            bytes: row.int("bytes")?,
            revoked: row.flag("revoked")?,
            created: row.int("created")?,
        })
    }
}

/// An upload through a file request, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RequestUpload {
    pub file_id: String,
    pub request_id: String,
    pub file_name: String,
    pub size: i64,
    pub uploader_name: String,
    pub uploader_email: String,
    pub client: Option<String>,
    pub created: i64,
}

impl FromRow for RequestUpload {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            file_id: row.text("file_id")?,
            request_id: row.text("request_id")?,
            file_name: row.text("name")?,
            size: row.int("size")?,
            uploader_name: row.text("uploader_name")?,
            uploader_email: row.text("uploader_email")?,
            client: row.opt_text("client")?,
            created: row.int("created")?,
        })
    }
}

const REQUEST: &str = "SELECT id, owner_id, title, password_hash, expires, max_files, max_bytes, content_types, \
     files, bytes, revoked, created FROM file_requests";

impl Db {
    /// Records a new file request.
    pub async fn insert_request(&self, row: &RequestRow, token_hash: &str) -> DbResult<()> {
        self.execute(
            "INSERT INTO file_requests (id, owner_id, token_hash, title, password_hash, expires, max_files, \
             max_bytes, content_types, files, bytes, revoked, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, 0, $10)",
            &[
                Arg::Text(&row.id),
                Arg::Text(&row.owner_id),
                Arg::Text(token_hash),
                Arg::Text(&row.title),
                Arg::OptText(row.password_hash.as_deref()),
                Arg::Int(row.expires),
                Arg::OptInt(row.max_files),
                Arg::OptInt(row.max_bytes),
                Arg::Text(&row.content_types),
                Arg::Int(row.created),
            ],
        )
        .await?;
        Ok(())
    }

    /// The request of a token (by its hash).
    pub async fn request_by_token(&self, token_hash: &str) -> DbResult<Option<RequestRow>> {
        self.optional(&format!("{REQUEST} WHERE token_hash = $1"), &[Arg::Text(token_hash)]).await
    }

    /// A request by id, of `owner` if given.
    pub async fn request(&self, id: &str, owner: Option<&str>) -> DbResult<Option<RequestRow>> {
        let sql = format!("{REQUEST} WHERE id = $1 AND ($2 = '' OR owner_id = $2)");
        self.optional(&sql, &[Arg::Text(id), Arg::Text(owner.unwrap_or(""))]).await
    }

    /// The requests of `owner` (`None`: everyone's), newest first.
    pub async fn requests(&self, owner: Option<&str>) -> DbResult<Vec<RequestRow>> {
        let sql = format!("{REQUEST} WHERE ($1 = '' OR owner_id = $1) ORDER BY created DESC, id LIMIT 500");
        self.all(&sql, &[Arg::Text(owner.unwrap_or(""))]).await
    }

    /// Takes room for one upload of at most `bound` bytes in a request, if its limits leave it
    /// (atomically: parallel uploads never pass them).
    pub async fn take_request_room(&self, id: &str, bound: i64) -> DbResult<bool> {
        let sql = "UPDATE file_requests SET files = files + 1, bytes = bytes + $1 WHERE id = $2 AND revoked = 0 \
                   AND expires > $3 AND (max_files IS NULL OR files < max_files) \
                   AND (max_bytes IS NULL OR bytes + $1 <= max_bytes)";
        Ok(self.execute(sql, &[Arg::Int(bound), Arg::Text(id), Arg::Int(now())]).await? == 1)
    }

    /// Gives room back: all of it (`files` 1) for an upload that failed, or what it did not use.
    pub async fn give_back_request_room(&self, id: &str, files: i64, bytes: i64) -> DbResult<()> {
        self.execute(
            "UPDATE file_requests SET files = files - $1, bytes = bytes - $2 WHERE id = $3",
            &[Arg::Int(files), Arg::Int(bytes), Arg::Text(id)],
        )
        .await?;
        Ok(())
    }

    /// Records who uploaded a file through a request.
    pub async fn insert_request_upload(
        &self,
        file_id: &str,
        request_id: &str,
        name: &str,
        email: &str,
        client: Option<&str>,
    ) -> DbResult<()> {
        self.execute(
            "INSERT INTO request_uploads (file_id, request_id, uploader_name, uploader_email, client, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Arg::Text(file_id),
                Arg::Text(request_id),
                Arg::Text(name),
                Arg::Text(email),
                Arg::OptText(client),
                Arg::Int(now()),
            ],
        )
        .await?;
        Ok(())
    }

    /// The uploads of a request, newest first.
    pub async fn request_uploads(&self, request_id: &str) -> DbResult<Vec<RequestUpload>> {
        self.all(
            "SELECT u.file_id, u.request_id, f.name, f.size, u.uploader_name, u.uploader_email, u.client, u.created \
             FROM request_uploads u JOIN files f ON f.id = u.file_id WHERE u.request_id = $1 \
             ORDER BY u.created DESC, u.file_id",
            &[Arg::Text(request_id)],
        )
        .await
    }

    /// Closes a request: it takes no more uploads.
    pub async fn revoke_request(&self, id: &str) -> DbResult<()> {
        self.execute("UPDATE file_requests SET revoked = 1 WHERE id = $1", &[Arg::Text(id)]).await?;
        Ok(())
    }
}
