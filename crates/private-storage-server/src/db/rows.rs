//! The rows, each mapped once for both drivers: [`FromRow`] reads a row through [`Columns`],
//! which sqlx's `AnyRow` and rusqlite's `Row` both implement.

use sqlx::Row as _;

/// Reading a row's columns by name, whatever the driver.
pub(super) trait Columns {
    type Error;
    fn text(&self, name: &str) -> Result<String, Self::Error>;
    fn opt_text(&self, name: &str) -> Result<Option<String>, Self::Error>;
    fn int(&self, name: &str) -> Result<i64, Self::Error>;
    fn opt_int(&self, name: &str) -> Result<Option<i64>, Self::Error>;
    fn flag(&self, name: &str) -> Result<bool, Self::Error> {
        Ok(self.int(name)? != 0)
    }
}

impl Columns for sqlx::any::AnyRow {
    type Error = sqlx::Error;
    fn text(&self, name: &str) -> sqlx::Result<String> {
        self.try_get(name)
    }
    fn opt_text(&self, name: &str) -> sqlx::Result<Option<String>> {
        self.try_get(name)
    }
    fn int(&self, name: &str) -> sqlx::Result<i64> {
        self.try_get(name)
    }
    fn opt_int(&self, name: &str) -> sqlx::Result<Option<i64>> {
        self.try_get(name)
    }
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, name: &str) -> rusqlite::Result<String> {
        self.get(name)
    }
    fn opt_text(&self, name: &str) -> rusqlite::Result<Option<String>> {
        self.get(name)
    }
    fn int(&self, name: &str) -> rusqlite::Result<i64> {
        self.get(name)
    }
    fn opt_int(&self, name: &str) -> rusqlite::Result<Option<i64>> {
        self.get(name)
    }
}

/// A value made from one row of a query.
pub(super) trait FromRow: Sized {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error>;
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub created: i64,
}

impl FromRow for UserRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            id: row.text("id")?,
            username: row.text("username")?,
            password_hash: row.text("password_hash")?,
            is_staff: row.flag("is_staff")?,
            is_superuser: row.flag("is_superuser")?,
            created: row.int("created")?,
        })
    }
}

/// The user of a live session, and the session's CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SessionUser {
    pub user: UserRow,
    pub csrf: String,
}

impl FromRow for SessionUser {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { user: UserRow::from_row(row)?, csrf: row.text("csrf")? })
    }
}

/// A stored file's record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FileRow {
    pub id: String,
    pub owner_id: String,
    pub object_key: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub sha256: String,
    pub created: i64,
    /// Where the file stands with the virus scanner.
    pub scan: ScanState,
    /// What the scanner said (the signature of an infected file), or why it did not scan.
    pub scan_detail: Option<String>,
}

/// Where a file stands with the virus scanner: only [`ScanState::servable`] files are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanState {
    /// Not scanned: stored while scanning was off, or larger than the scanner takes under
    /// `scan_oversize = "unscanned"`. Served, and shown as not scanned.
    Unscanned,
    /// Waiting for its scan: not served.
    Pending,
    /// Scanned, nothing found: served.
    Clean,
    /// Found infected, kept out of reach: not served.
    Infected,
    /// Found infected and its bytes deleted (`scan_infected = "delete"`): the record tells its
    /// owner.
    Removed,
    /// Larger than the scanner accepts under `scan_oversize = "reject"`: not served.
    Refused,
}

impl ScanState {
    /// Every state, as stored.
    pub const ALL: [ScanState; 6] = [
        ScanState::Unscanned,
        ScanState::Pending,
        ScanState::Clean,
        ScanState::Infected,
        ScanState::Removed,
        ScanState::Refused,
    ];

    /// The stored name (also the API's).
    pub fn as_str(self) -> &'static str {
        match self {
            ScanState::Unscanned => "unscanned",
            ScanState::Pending => "pending",
            ScanState::Clean => "clean",
            ScanState::Infected => "infected",
            ScanState::Removed => "removed",
            ScanState::Refused => "refused",
        }
    }

    /// The state of a stored name; an unknown one is [`ScanState::Refused`]: fail closed.
    pub fn parse(name: &str) -> Self {
        Self::ALL.into_iter().find(|s| s.as_str() == name).unwrap_or(ScanState::Refused)
    }

    /// Whether the file may be served.
    pub fn servable(self) -> bool {
        matches!(self, ScanState::Unscanned | ScanState::Clean)
    }
}

impl FromRow for FileRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            id: row.text("id")?,
            owner_id: row.text("owner_id")?,
            object_key: row.text("object_key")?,
            name: row.text("name")?,
            size: row.int("size")?,
            content_type: row.text("content_type")?,
            sha256: row.text("sha256")?,
            created: row.int("created")?,
            scan: ScanState::parse(&row.text("scan")?),
            scan_detail: row.opt_text("scan_detail")?,
        })
    }
}

/// A file's record with its owner's name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OwnedFile {
    pub file: FileRow,
    pub owner: String,
}

impl FromRow for OwnedFile {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { file: FileRow::from_row(row)?, owner: row.text("username")? })
    }
}

/// A share link of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LinkRow {
    pub link_id: String,
    pub file_id: String,
    pub issued_by: Option<String>,
    pub bound_to: Option<String>,
    /// When the link stops working (seconds); may be extended up to `token_expires`.
    pub expires: i64,
    pub created: i64,
    /// The argon2id hash of its password, if it has one.
    pub password_hash: Option<String>,
    /// How many downloads it allows, if limited.
    pub max_downloads: Option<i64>,
    /// How many it has served.
    pub downloads: i64,
    /// When its token itself expires: the most `expires` may be extended to (`None`: links
    /// issued before extension existed, whose token ends at `expires`).
    pub token_expires: Option<i64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl LinkRow {
    /// The latest `expires` may become.
    pub fn extendable_to(&self) -> i64 {
        self.token_expires.unwrap_or(self.expires)
    }
}

impl FromRow for LinkRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            link_id: row.text("link_id")?,
            file_id: row.text("file_id")?,
            issued_by: row.opt_text("issued_by")?,
            bound_to: row.opt_text("bound_to")?,
            expires: row.int("expires")?,
            created: row.int("created")?,
            password_hash: row.opt_text("password_hash")?,
            max_downloads: row.opt_int("max_downloads")?,
            downloads: row.int("downloads")?,
            token_expires: row.opt_int("token_expires")?,
            revoked: row.flag("revoked")?,
        })
    }
}

/// A link with its file's name and owner, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OwnedLink {
    pub link: LinkRow,
    pub file_name: String,
    pub owner_id: String,
}

impl FromRow for OwnedLink {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { link: LinkRow::from_row(row)?, file_name: row.text("name")?, owner_id: row.text("owner_id")? })
    }
}

/// A number a query computes, as the column `n`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Number(pub(super) i64);

impl FromRow for Number {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self(row.int("n")?))
    }
}

/// An audit event of a share link: what happened and its details.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ShareEvent {
    pub kind: String,
    pub detail: String,
}

impl FromRow for ShareEvent {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { kind: row.text("kind")?, detail: row.text("detail")? })
    }
}
