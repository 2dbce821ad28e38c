//! Accounts: users (argon2id passwords), API tokens and sessions (only their SHA-256 kept),
//! logins with a limit on failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Argon2, Params};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::audit::Event;
use super::{Domain, Error, Result};
use crate::db::{SessionUser, UserRow, now};

/// `bytes` random bytes from the OS, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a secret: what is stored of tokens and session ids.
pub fn sha256_hex(secret: &str) -> String {
    crate::db::hex(&Sha256::digest(secret.as_bytes()))
}

/// An argon2id hash (the crate's default parameters: 19 MiB, 2 passes) in PHC format.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let argon2 = Argon2::default();
    let output =
        argon2_output(&argon2, password, &salt, Params::DEFAULT_OUTPUT_LEN).expect("argon2 hashes any password");
    PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).expect("the default parameters"),
        salt: Some(SaltString::encode_b64(&salt).expect("16 bytes make a valid salt").as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Checks a password against a stored hash, with the parameters the hash names (the output
/// is compared in constant time).
fn verify_password(password: &str, hash: &str) -> bool {
    let check = || {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed.version.map_or(Ok(argon2::Version::default()), argon2::Version::try_from).ok()?;
        let argon2 = Argon2::new(algorithm, version, Params::try_from(&parsed).ok()?);
        let (salt, expected) = (parsed.salt?, parsed.hash?);
        let mut salt_bytes = [0u8; 64];
        let output = argon2_output(&argon2, password, salt.decode_b64(&mut salt_bytes).ok()?, expected.len())?;
        Some(output == expected)
    };
    check().unwrap_or(false)
}

/// argon2 over memory this thread keeps between calls. Each call needs its parameters' memory
/// (19 MiB by default); allocated afresh every time, as the crate does, the freed blocks stay
/// in the allocator's per-thread caches, and a login flood took a server from 13 to 134 MiB.
/// Reused, the hashing threads hold one block set each.
fn argon2_output(argon2: &Argon2<'_>, password: &str, salt: &[u8], len: usize) -> Option<Output> {
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let blocks = argon2.params().block_count();
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .ok()
    })
}

/// A password hash or check, run on one of the hashing threads.
type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing threads and what may wait for them.
struct Hashing {
    jobs: std::sync::mpsc::Sender<HashJob>,
    /// One per job queued or running: a flood beyond them is refused, not queued.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How many password checks may wait per hashing thread (each takes ~15 ms).
const QUEUED_PER_THREAD: usize = 16;

/// The hashing threads: as many as the machine has cores (at most 4), fed by one bounded
/// queue, off the async workers that serve downloads and `/healthz`.
fn hashing() -> &'static Hashing {
    static HASHING: std::sync::OnceLock<Hashing> = std::sync::OnceLock::new();
    HASHING.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("a hashing thread starts");
        }
        Hashing { jobs, slots: std::sync::Arc::new(tokio::sync::Semaphore::new(threads * QUEUED_PER_THREAD)) }
    })
}

/// Runs a password hash or check on the hashing threads.
///
/// # Errors
/// [`Error::Busy`] when the queue is full.
/// [`hash_password`] on the hashing threads.
pub(super) async fn hash_off_the_workers(password: String) -> Result<String> {
    off_the_workers(move || hash_password(&password)).await
}

/// Whether `password` matches `hash`, checked on the hashing threads.
pub(super) async fn verify_off_the_workers(password: String, hash: String) -> Result<bool> {
    off_the_workers(move || verify_password(&password, &hash)).await
}

async fn off_the_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let hashing = hashing();
    let slot = hashing.slots.clone().try_acquire_owned().map_err(|_| Error::Busy)?;
    let (done, result) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        // A request that went away while queued costs no hash.
        if !done.is_closed() {
            let _ = done.send(work());
        }
        drop(slot);
    });
    hashing.jobs.send(job).map_err(|e| Error::Internal(e.to_string().into()))?;
    result.await.map_err(|e| Error::Internal(e.into()))
}

/// A hash to verify against when the user does not exist, so that a login for an unknown name
/// costs the same time as one with a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password anyone has"))
}

/// What becomes of a deleted user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TheirFiles {
    /// Nothing: the user is not deleted while they own files.
    Refuse,
    /// They are deleted: records, share links and bytes.
    Delete,
    /// They now belong to the user of this name.
    TransferTo(String),
}

/// A session just started: the id for the cookie (shown once; only its hash is stored).
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session id.
    pub id: String,
    /// Who logged in.
    pub user: UserRow,
}

/// The role of a user, as the command line shows it.
pub(crate) fn role(user: &UserRow) -> &'static str {
    if user.is_superuser {
        "superuser"
    } else if user.is_staff {
        "staff"
    } else {
        "user"
    }
}

impl Domain {
    /// The user an API token belongs to.
    ///
    /// # Errors
    /// [`Error::BadToken`] for a token that is not valid; the database's.
    pub async fn user_by_token(&self, token: &str) -> Result<Arc<UserRow>> {
        self.db.user_by_token(&sha256_hex(token)).await?.ok_or(Error::BadToken)
    }

    /// The user and CSRF token of a live session, if the id is one.
    ///
    /// # Errors
    /// The database's.
    pub async fn session(&self, session_id: &str) -> Result<Option<SessionUser>> {
        Ok(self.db.session(&sha256_hex(session_id)).await?)
    }

    /// Checks a name and password (the same work whether or not the name exists), under the
    /// limit of failures per name and address, and starts a session. `replaces` is the
    /// session the client had, which ends.
    ///
    /// # Errors
    /// [`Error::TooManyAttempts`], [`Error::WrongCredentials`]; the database's.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
        replaces: Option<&str>,
    ) -> Result<NewSession> {
        let result = self.login_checked(username, password, ip, replaces).await;
        let event = match &result {
            Ok(session) => Event::new("login", format!("user:{}", session.user.username)).user_id(&session.user.id),
            Err(Error::WrongCredentials) => Event::new("login_failed", "anonymous"),
            Err(Error::TooManyAttempts | Error::Forbidden(_)) => Event::new("login_refused", "anonymous"),
            Err(_) => return result,
        };
        self.audit.record(event.detail(format!("name={}", username.escape_debug())));
        result
    }

    async fn login_checked(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
        replaces: Option<&str>,
    ) -> Result<NewSession> {
        if !self.config.password_login {
            return Err(Error::Forbidden(
                "Passwords do not log in here: sign in through the identity provider.".into(),
            ));
        }
        // The attempt counts as a failure from here on (forgotten only if it succeeds), so
        // parallel guesses cannot all pass the limit while the first ones are being checked.
        if !self.limiter.reserve(username, ip) {
            self.metrics.denied("login_rate");
            return Err(Error::TooManyAttempts);
        }
        let user = self.db.user_by_name(username).await?;
        let hash = user.as_ref().map_or(dummy_hash(), |u| u.password_hash.as_str()).to_owned();
        let password = password.to_owned();
        let verified = off_the_workers(move || verify_password(&password, &hash)).await?;
        let Some(user) = user.filter(|_| verified) else {
            self.metrics.denied("login");
            tracing::info!(username, "failed login");
            return Err(Error::WrongCredentials);
        };
        self.limiter.succeeded(username, ip);
        if let Some(old) = replaces {
            self.db.delete_session(&sha256_hex(old)).await?;
        }
        let id = random_token(32);
        let expires = now() + self.config.session_ttl.as_secs() as i64;
        self.db.create_session(&sha256_hex(&id), &user.id, &random_token(24), expires).await?;
        tracing::info!(username = %user.username, "logged in");
        Ok(NewSession { id, user })
    }

    /// Ends a session (by the hash of its id).
    ///
    /// # Errors
    /// The database's.
    pub async fn logout(&self, session_id_hash: &str) -> Result<()> {
        Ok(self.db.delete_session(session_id_hash).await?)
    }

    /// Whether `name` can be a new user: valid, and not taken. (Asked before a password is
    /// prompted for; [`Domain::add_user`] checks it again.)
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, [`Error::Exists`]; the database's.
    pub async fn check_new_user(&self, name: &str) -> Result<()> {
        if name.is_empty()
            || name.chars().count() > MAX_NAME
            || name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/')
        {
            return Err(Error::Invalid(format!(
                "{name:?} is not a valid user name (no spaces, slashes or control characters)"
            )));
        }
        if self.db.user_by_name(name).await?.is_some() {
            return Err(user_exists(name));
        }
        Ok(())
    }

    /// Creates a user.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a short password, [`Error::Exists`]; the database's.
    pub async fn add_user(&self, name: &str, password: &str, staff: bool, superuser: bool) -> Result<UserRow> {
        self.check_new_user(name).await?;
        check_password(password)?;
        let password = password.to_owned();
        let hash = off_the_workers(move || hash_password(&password)).await?;
        match self.db.create_user(name, &hash, staff, superuser).await {
            // Taken between the check and the insert.
            Err(crate::db::DbError::Conflict(_)) => Err(user_exists(name)),
            created => Ok(created?),
        }
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// The database's.
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        Ok(self.db.users().await?)
    }

    /// Whether any user exists (the server says how to create the first one otherwise).
    ///
    /// # Errors
    /// The database's.
    pub async fn has_users(&self) -> Result<bool> {
        Ok(self.db.user_count().await? > 0)
    }

    pub(crate) async fn user_named(&self, name: &str) -> Result<UserRow> {
        self.db.user_by_name(name).await?.ok_or(Error::NotFound("user"))
    }

    /// The only user, for commands that act for "the" user when there is just one.
    ///
    /// # Errors
    /// [`Error::Invalid`] unless there is exactly one user; the database's.
    pub async fn only_user(&self) -> Result<UserRow> {
        let mut users = self.db.users().await?;
        if users.len() != 1 {
            return Err(Error::Invalid("say whose file it is with --owner NAME".into()));
        }
        Ok(users.remove(0))
    }

    /// Sets a user's password and ends their sessions.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Invalid`] for a short password; the database's.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        check_password(password)?;
        let user = self.user_named(name).await?;
        let password = password.to_owned();
        let hash = off_the_workers(move || hash_password(&password)).await?;
        self.db.set_password(&user.id, &hash).await?;
        Ok(())
    }

    /// Deletes a user with their sessions and tokens, doing with their files what `files`
    /// says; returns how many files were deleted or transferred. A user who owns files is not
    /// deleted unless told what becomes of them: their bytes would otherwise stay in the
    /// storage with no record.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user (or transfer target); [`Error::Invalid`] when
    /// they own files and `files` is [`TheirFiles::Refuse`], or the target is the user
    /// themselves; the database's and the storage's.
    pub async fn remove_user(&self, name: &str, files: &TheirFiles) -> Result<u64> {
        let user = self.user_named(name).await?;
        let (_, owned) = self.db.files(Some(&user.id), 1, 0).await?;
        let done = match files {
            TheirFiles::Refuse if owned > 0 => {
                return Err(Error::Invalid(format!(
                    "{name} owns {owned} file(s): add --delete-files to delete them, or --transfer-to NAME to give \
                     them to another user"
                )));
            }
            TheirFiles::Refuse => 0,
            TheirFiles::Delete => {
                let mut deleted = 0;
                loop {
                    let (batch, _) = self.db.files(Some(&user.id), 500, 0).await?;
                    if batch.is_empty() {
                        break deleted;
                    }
                    for file in batch {
                        self.delete(&super::Actor::Operator, &file.file.id).await?;
                        deleted += 1;
                    }
                }
            }
            TheirFiles::TransferTo(to) => {
                let heir = self.user_named(to).await?;
                if heir.id == user.id {
                    return Err(Error::Invalid(format!("{name} cannot inherit their own files")));
                }
                self.db.transfer_files(&user.id, &heir.id).await?
            }
        };
        self.db.delete_user(&user.id).await?;
        tracing::info!(user = name, files = done, "user deleted");
        Ok(done)
    }

    /// Creates an API token for a user; returns it (the only time it is seen).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the database's.
    pub async fn create_token(&self, user: &str, label: &str) -> Result<(UserRow, String)> {
        let user = self.user_named(user).await?;
        let token = format!("ps_{}", random_token(32));
        self.db.create_token(&user.id, label, &sha256_hex(&token)).await?;
        Ok((user, token))
    }

    /// Revokes a user's token by label, or all of them; returns how many.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the database's.
    pub async fn revoke_tokens(&self, user: &str, label: Option<&str>) -> Result<(UserRow, u64)> {
        let user = self.user_named(user).await?;
        let revoked = self.db.revoke_tokens(&user.id, label).await?;
        Ok((user, revoked))
    }
}

fn user_exists(name: &str) -> Error {
    Error::Exists(format!("a user named {name} exists already"))
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        return Err(Error::Invalid("a password needs at least 8 characters".into()));
    }
    Ok(())
}

/// Login attempts in a window, per (name, address) and per name: after `per_address`
/// failures from one address, or `per_account` from all addresses together, further attempts
/// at that name are refused until the window has passed. Per instance.
///
/// The per-account cap is what stops a guesser with many addresses; its price is that anyone
/// can lock a name out for one window by failing `per_account` times. Both caps are far above
/// what a person mistyping needs, and a success clears the name's counts.
///
/// Memory is bounded: names are compared in lower case on their first 150 characters
/// (no account has a longer one), and each table holds at most `capacity` entries — expired
/// ones are dropped first, then the oldest.
#[derive(Debug)]
pub struct LoginLimiter {
    per_address: u32,
    per_account: u32,
    window: Duration,
    capacity: usize,
    state: Mutex<Counts>,
}

/// The longest user name; longer names are cut to it for counting.
pub(crate) const MAX_NAME: usize = 150;

#[derive(Debug, Default)]
struct Counts {
    pairs: HashMap<(String, Option<IpAddr>), (u32, Instant)>,
    accounts: HashMap<String, (u32, Instant)>,
}

fn counted_name(name: &str) -> String {
    name.chars().take(MAX_NAME).collect::<String>().to_lowercase()
}

/// The count of `key` in `table` now (an expired window counts zero).
fn current<K: std::hash::Hash + Eq>(table: &HashMap<K, (u32, Instant)>, key: &K, window: Duration) -> u32 {
    table.get(key).filter(|(_, since)| since.elapsed() <= window).map_or(0, |(count, _)| *count)
}

/// Adds one to `key`'s count, making room first if the table is full.
fn bump<K: std::hash::Hash + Eq + Clone>(
    table: &mut HashMap<K, (u32, Instant)>,
    key: K,
    window: Duration,
    capacity: usize,
) {
    if !table.contains_key(&key) && table.len() >= capacity {
        table.retain(|_, (_, since)| since.elapsed() <= window);
        if table.len() >= capacity
            && let Some(oldest) = table.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
    }
    let entry = table.entry(key).or_insert((0, Instant::now()));
    if entry.1.elapsed() > window {
        *entry = (0, Instant::now());
    }
    entry.0 += 1;
}

impl LoginLimiter {
    /// At most `per_address` failures per name and address, and `per_account` per name, in
    /// each `window`; each table holds at most `capacity` entries.
    pub fn new(per_address: u32, per_account: u32, window: Duration, capacity: usize) -> Self {
        Self { per_address, per_account, window, capacity: capacity.max(1), state: Mutex::default() }
    }

    /// Takes an attempt, counted as a failure until [`succeeded`](Self::succeeded) says
    /// otherwise; `false` (nothing counted) when a cap is reached. Check and count are one step.
    pub fn reserve(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let name = counted_name(name);
        let pair = (name.clone(), ip);
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if current(&counts.pairs, &pair, self.window) >= self.per_address
            || current(&counts.accounts, &name, self.window) >= self.per_account
        {
            return false;
        }
        bump(&mut counts.pairs, pair, self.window, self.capacity);
        bump(&mut counts.accounts, name, self.window, self.capacity);
        true
    }

    /// Forgets a name's failures after a successful login.
    pub fn succeeded(&self, name: &str, ip: Option<IpAddr>) {
        let name = counted_name(name);
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.pairs.remove(&(name.clone(), ip));
        counts.accounts.remove(&name);
    }

    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let counts = self.state.lock().unwrap();
        (counts.pairs.len(), counts.accounts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // A hash stored by an earlier version (the crate's own API, its default parameters).
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let stock = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(stock.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stock}");
        assert!(verify_password("correct horse", &stock) && !verify_password("correct horsE", &stock));
        // Other parameters named by the hash are honoured (argon2i, more passes).
        let other =
            Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, Params::new(8192, 3, 1, None).unwrap());
        let other = other.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_password("pw", &other) && !verify_password("pW", &other), "{other}");
        // And ours is a standard PHC string the crate verifies.
        let ours = hash_password("correct horse");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok(), "{ours}");
        assert_eq!(ours.split('$').nth(3), Some("m=19456,t=2,p=1"));
    }

    #[tokio::test]
    async fn a_full_hashing_queue_refuses_instead_of_growing() {
        let capacity = hashing().slots.available_permits();
        assert!(capacity >= QUEUED_PER_THREAD, "{capacity}");
        // Jobs that hold their thread until their sender is dropped fill every slot.
        let (mut releases, mut held) = (Vec::new(), Vec::new());
        for _ in 0..capacity {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            let mut job = Box::pin(off_the_workers(move || wait.recv().is_err()));
            assert!(futures_util::poll!(job.as_mut()).is_pending());
            held.push(job);
        }
        assert!(matches!(off_the_workers(|| ()).await, Err(Error::Busy)), "one more is refused");
        assert_eq!(Error::Busy.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        drop(releases);
        for job in held {
            assert!(job.await.unwrap(), "every held job ran once released");
        }
        assert!(off_the_workers(|| ()).await.is_ok(), "and the queue takes work again");
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_limiter_refuses_after_max_failures_and_forgets_after_success() {
        let limiter = LoginLimiter::new(3, 100, Duration::from_secs(900), 1000);
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            assert!(limiter.reserve("Ada", ip));
        }
        assert!(!limiter.reserve("ada", ip), "names are compared case-insensitively");
        assert!(limiter.reserve("ada", Some(IpAddr::from([10, 0, 0, 1]))), "another address has its own count");
        assert!(limiter.reserve("bob", ip));
        limiter.succeeded("ada", ip);
        assert!(limiter.reserve("ada", ip));
    }

    #[test]
    fn the_per_account_cap_holds_across_addresses() {
        let limiter = LoginLimiter::new(5, 20, Duration::from_secs(900), 1000);
        let allowed = (0..100u8).filter(|i| limiter.reserve("ada", Some(IpAddr::from([10, 0, 0, *i])))).count();
        assert_eq!(allowed, 20);
        assert!(limiter.reserve("bob", Some(IpAddr::from([10, 0, 0, 1]))), "other names are not affected");
    }

    #[test]
    fn the_limiter_memory_is_bounded() {
        let limiter = LoginLimiter::new(5, 20, Duration::from_secs(900), 100);
        for i in 0..10_000u32 {
            assert!(limiter.reserve(&format!("{i}-{}", "x".repeat(2000)), Some(IpAddr::from(i.to_be_bytes()))));
        }
        assert_eq!(limiter.entries(), (100, 100), "at most `capacity` entries per table");
        // Names beyond the longest possible one count as that one.
        let long = "y".repeat(5000);
        for _ in 0..5 {
            assert!(limiter.reserve(&long, None));
        }
        assert!(!limiter.reserve(&format!("{long}z"), None));
    }
}
