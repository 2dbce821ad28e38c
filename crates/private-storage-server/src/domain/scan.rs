//! Virus scanning: with `scan = "clamav"` every new file is recorded **pending** and served by
//! no route until clamd has seen all of it and found nothing (**clean**). A file found
//! **infected** is kept out of reach, or its bytes deleted (**removed**); its record tells the
//! owner. Fail closed: while clamd is down, files stay pending (downloads answer 503) and are
//! scanned as soon as it answers again, by whichever instance gets there first (a claim in the
//! database, so two instances do not scan one file at once).
//!
//! The hold ([`scan_hold`]) is the library's [`FileHold`](private_storage::FileHold) on every
//! download service (by record, by key, by share link), so it runs after the access rule and
//! before any delivery mode — stream, nginx, Apache, S3 redirect — sees the file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use private_storage::scan::{Clamd, ScanError, Verdict};
use private_storage::{Held, ObjectKey, PrivateFile};
use tokio::sync::Notify;

use super::audit::Event;
use super::webhooks::file_data;
use super::{Domain, Error, Result};
use crate::config::ScanConfig;
use crate::config::WebhookEvent;
use crate::db::{Db, FileRow, ScanState, now};

/// How long an instance's claim on a file's scan lasts: if it dies mid-scan, another instance
/// scans the file after this.
const CLAIM: Duration = Duration::from_secs(300);
/// How soon a scan is retried while clamd is down.
const RETRY: Duration = Duration::from_secs(5);
/// How often pending files are looked for when nothing woke the scanner (files recorded by
/// another instance or by the command line).
const SWEEP: Duration = Duration::from_secs(30);
/// Files scanned at once by one instance.
const AT_ONCE: usize = 2;
/// Files claimed per round.
const BATCH: i64 = 16;

/// The scanner of one instance: the clamd client and what it last saw.
#[derive(Debug)]
pub(crate) struct Scanner {
    clamd: Clamd,
    config: ScanConfig,
    /// Whether clamd answered the last time it was asked (pending files answer 423 while it
    /// does, 503 while it does not).
    up: AtomicBool,
    /// Wakes the scanning loop: a file was recorded pending.
    wake: Notify,
}

impl Scanner {
    pub(super) fn new(config: ScanConfig) -> Self {
        Self {
            clamd: Clamd::new(config.address.clone()).timeout(config.timeout),
            config,
            up: AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    /// The most an upload may be when larger files are refused (`scan_oversize = "reject"`).
    pub(super) fn upload_limit(&self) -> Option<u64> {
        self.config.reject_oversize.then_some(self.config.max_size)
    }
}

/// Why a file in `state` is not served, if it is not; `scanner_up` tells a scan that is
/// coming (423) from one that cannot run now (503).
pub(crate) fn hold_of(state: ScanState, detail: Option<&str>, scanner_up: bool) -> Option<Held> {
    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    match state {
        ScanState::Unscanned | ScanState::Clean => None,
        ScanState::Pending if scanner_up => Some(Held::locked(
            "This file is being scanned for viruses: it can be downloaded once the scan is done.",
            RETRY,
        )),
        ScanState::Pending => Some(Held::unavailable(
            "The virus scanner is unavailable: this file can be downloaded once it has been scanned.",
            Duration::from_secs(30),
        )),
        ScanState::Infected => {
            Some(Held::forbidden(format!("This file was found infected{detail} and is not served.")))
        }
        ScanState::Removed => {
            Some(Held::forbidden(format!("This file was found infected{detail} and has been deleted.")))
        }
        ScanState::Refused => {
            Some(Held::forbidden(format!("This file could not be scanned for viruses{detail} and is not served.")))
        }
    }
}

/// The hold of every download service: a file by record carries its scan state (no query); a
/// file by key or share link is looked up by its key when holds are `by_key` — with scanning
/// on, or held files left from when it was. A key with no record is not a stored upload and
/// is not held. A database that does not answer holds everything: fail closed.
pub(super) fn scan_hold(
    db: Db,
    scanner: Option<Arc<Scanner>>,
    by_key: Arc<AtomicBool>,
) -> impl Fn(PrivateFile) -> futures_util::future::BoxFuture<'static, Option<Held>> + Clone + Send + Sync + 'static {
    move |file: PrivateFile| {
        let (db, scanner, by_key) = (db.clone(), scanner.clone(), by_key.clone());
        Box::pin(async move {
            let up = scanner.as_ref().is_none_or(|s| s.up.load(Ordering::Relaxed));
            if let Some(row) = file.parent::<std::sync::Arc<FileRow>>() {
                return hold_of(row.scan, row.scan_detail.as_deref(), up);
            }
            if !by_key.load(Ordering::Relaxed) {
                return None;
            }
            match db.file_by_key(file.key().as_str()).await {
                Ok(Some(row)) => hold_of(row.scan, row.scan_detail.as_deref(), up),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "the scan state of a download could not be read");
                    Some(Held::unavailable("The service is temporarily unavailable.", Duration::from_secs(5)))
                }
            }
        })
    }
}

impl Domain {
    /// The scan state a new file of `size` bytes is recorded in.
    pub(super) fn initial_scan(&self, size: u64) -> (ScanState, Option<String>) {
        match &self.scanner {
            None => (ScanState::Unscanned, None),
            Some(scanner) if size > scanner.config.max_size => (ScanState::Unscanned, Some(too_large(&scanner.config))),
            Some(_) => (ScanState::Pending, None),
        }
    }

    /// Tells this instance's scanner that a file waits.
    pub(super) fn file_waits(&self) {
        if let Some(scanner) = &self.scanner {
            scanner.wake.notify_one();
        }
    }

    /// Why the file is not served, if it is not (for paths that read files outside the
    /// download services: the command line's `get`).
    ///
    /// # Errors
    /// [`Error::Held`] for a held file.
    pub(super) fn check_servable(&self, file: &FileRow) -> Result<()> {
        let up = self.scanner.as_ref().is_none_or(|s| s.up.load(Ordering::Relaxed));
        match hold_of(file.scan, file.scan_detail.as_deref(), up) {
            Some(held) => Err(Error::Held(held)),
            None => Ok(()),
        }
    }

    /// Looks up, once at start, whether files are held though scanning is off (left from when
    /// it was on): downloads by key then check the database too.
    pub(crate) async fn note_held_files(&self) -> Result<()> {
        if self.scanner.is_some() {
            return Ok(());
        }
        // Only the held states are counted (every process starts with this: a million clean
        // files are not counted for it).
        let mut held = 0;
        for state in ScanState::ALL.into_iter().filter(|s| !s.servable() && *s != ScanState::Removed) {
            held += self.db.scan_count(state).await?; // (removed: no bytes left)
        }
        if held > 0 {
            tracing::warn!(
                files = held,
                "scanning is off, but files are pending or infected from when it was on: they stay unserved"
            );
        }
        self.holds_by_key.store(held > 0, Ordering::Relaxed);
        Ok(())
    }

    /// How many files are in each scan state.
    ///
    /// # Errors
    /// The database's.
    pub async fn scan_counts(&self) -> Result<Vec<(ScanState, i64)>> {
        Ok(self.db.scan_counts().await?)
    }

    /// Scans one round of the files waiting (claimed first, so no other instance scans them at
    /// the same time), at most [`AT_ONCE`] at a time; returns how many got a verdict. Stops
    /// early while clamd is down: the rest stay pending for the next round.
    ///
    /// # Errors
    /// The database's.
    pub async fn scan_waiting(&self) -> Result<usize> {
        let Some(scanner) = &self.scanner else { return Ok(0) };
        let waiting = self.db.unclaimed_scans(BATCH).await?;
        let scanned = futures_util::stream::iter(waiting)
            .map(|file| self.claim_and_scan(scanner, file))
            .buffer_unordered(AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut done = 0;
        for outcome in scanned {
            match outcome {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Scans files as they arrive, and whatever waits, until the task is dropped: woken by
    /// each new file of this instance, every [`SWEEP`] otherwise, every [`RETRY`] while clamd
    /// is down. What is left pending when it stops (a shutdown, a crash) is scanned later, by
    /// this or another instance.
    pub async fn scan_forever(self) {
        let Some(scanner) = self.scanner.clone() else { return };
        loop {
            let pause = match self.scan_waiting().await {
                // A full round: there may be more.
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) if scanner.up.load(Ordering::Relaxed) => SWEEP,
                Ok(_) => RETRY,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for files to scan");
                    RETRY
                }
            };
            let _ = tokio::time::timeout(pause, scanner.wake.notified()).await;
        }
    }

    /// Scans the file `id` now if it is pending and no one else is scanning it (for the
    /// command line's `put`, which has no scanning loop); its state afterwards.
    ///
    /// # Errors
    /// The database's.
    pub async fn scan_now(&self, id: &str) -> Result<ScanState> {
        if let (Some(scanner), Some(file)) = (&self.scanner, self.db.file(id, None).await?) {
            self.claim_and_scan(scanner, FileRow::clone(&file)).await?;
        }
        Ok(self.db.file(id, None).await?.map_or(ScanState::Removed, |f| f.scan))
    }

    /// Claims `file`'s scan and scans it: `true` when it got a verdict.
    async fn claim_and_scan(&self, scanner: &Scanner, file: FileRow) -> Result<bool> {
        if !self.db.claim_scan(&file.id, now() + CLAIM.as_secs() as i64).await? {
            return Ok(false);
        }
        let verdict = match ObjectKey::new(&file.object_key) {
            Ok(key) => scanner.clamd.scan_object(&*self.storage, &key).await,
            Err(e) => Err(ScanError::Source(e.into())),
        };
        let (state, detail) = match verdict {
            Ok(verdict) => {
                scanner.up.store(true, Ordering::Relaxed);
                self.verdict_state(scanner, &file, verdict)
            }
            Err(e) => {
                if matches!(e, ScanError::Unavailable { .. }) {
                    if scanner.up.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "the virus scanner is down: new files stay pending");
                    }
                } else {
                    tracing::error!(id = %file.id, key = %file.object_key, error = %e, "a file could not be scanned");
                }
                self.db.release_scan(&file.id).await?;
                self.metrics.scanned("error");
                return Ok(false);
            }
        };
        if !self.db.set_scan(&file.id, state, detail.as_deref()).await? {
            return Ok(false); // deleted meanwhile
        }
        self.metrics.scanned(state.as_str());
        let scanned = FileRow { scan: state, scan_detail: detail.clone(), ..file.clone() };
        let summary = match &detail {
            Some(detail) => format!("{}: {detail}", state.as_str()),
            None => state.as_str().to_owned(),
        };
        self.audit.record(Event::new("scan", "scanner").file(&scanned).detail(summary));
        match state {
            ScanState::Clean | ScanState::Unscanned => {
                self.emit(WebhookEvent::FileCreated, serde_json::json!({ "file": file_data(&scanned) })).await;
            }
            ScanState::Infected | ScanState::Removed => {
                let data = serde_json::json!({ "file": file_data(&scanned), "signature": detail });
                self.emit(WebhookEvent::ScanInfected, data).await;
            }
            ScanState::Pending | ScanState::Refused => {}
        }
        if state == ScanState::Removed {
            match ObjectKey::new(&file.object_key) {
                Ok(key) => {
                    if let Err(e) = self.storage.delete(&key).await {
                        tracing::error!(key = %key, error = %e, "could not delete the bytes of an infected file");
                    }
                }
                Err(e) => tracing::error!(key = %file.object_key, error = %e, "a record with an invalid key"),
            }
        }
        Ok(true)
    }

    /// The state a verdict puts a file in, logged.
    fn verdict_state(&self, scanner: &Scanner, file: &FileRow, verdict: Verdict) -> (ScanState, Option<String>) {
        let config = &scanner.config;
        match verdict {
            Verdict::Clean => {
                tracing::info!(id = %file.id, "file scanned: clean");
                (ScanState::Clean, None)
            }
            Verdict::Infected { signature } => {
                tracing::warn!(
                    id = %file.id, key = %file.object_key, owner = %file.owner_id, %signature,
                    deleted = config.delete_infected, "file scanned: infected"
                );
                let state = if config.delete_infected { ScanState::Removed } else { ScanState::Infected };
                (state, Some(signature))
            }
            Verdict::TooLarge if config.reject_oversize => {
                tracing::error!(
                    id = %file.id, size = file.size,
                    "clamd refused a file under scan_max_size as too large: set scan_max_size to clamd's StreamMaxLength"
                );
                (ScanState::Refused, Some(too_large(config)))
            }
            Verdict::TooLarge => (ScanState::Unscanned, Some(too_large(config))),
            // `Verdict` is non-exhaustive: a verdict this server does not know is no pass.
            other => {
                tracing::error!(id = %file.id, verdict = ?other, "an unknown scan verdict: the file is not served");
                (ScanState::Refused, Some(format!("{other:?}")))
            }
        }
    }
}

fn too_large(config: &ScanConfig) -> String {
    format!("larger than the virus scanner takes, {}", private_storage::human_size(config.max_size))
}
