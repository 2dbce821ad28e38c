//! Opening a share link: every request to `/s/<token>` passes here before any byte.
//!
//! In order: the token must be authentic (its signature) and its link live (not revoked, not
//! past the expiry kept here — which the owner may extend); link-preview bots get a page of
//! metadata, never bytes, and never count; a password link answers nothing but its password
//! form until this browser gave the password (a cookie scoped to the link's path, remembered
//! in the database so any instance knows it); a person's browser gets the link's page; then the
//! download is counted — once per logical download: a `GET` without `Range` is one, a `Range`
//! request joins its client's run of requests on the link (a `<video>` seeking, `curl -C -`)
//! when the client's last request is under 10 minutes old, `HEAD` and pages are none — with
//! one atomic update that never passes `max_downloads`, whatever runs in parallel on however
//! many instances. A count whose request then serves nothing (a denial, a hold, an error) is
//! given back.

use std::net::IpAddr;
use std::time::Duration;

use super::accounts::{random_token, sha256_hex, verify_off_the_workers};
use super::audit::Event;
use super::{Domain, Error, Result};
use crate::config::WebhookEvent;
use crate::db::{FileRow, LinkRow, now};

/// How long a browser that gave a link's password may fetch it (at most the link's life).
pub const UNLOCK_TTL: Duration = Duration::from_secs(3600);

/// User agents of link-preview bots (case-insensitive substrings): they get a page of metadata.
const PREVIEW_BOTS: &[&str] = &[
    "slackbot",
    "slack-imgproxy",
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "discordbot",
    "whatsapp",
    "telegrambot",
    "linkedinbot",
    "skypeuripreview",
    "microsoftpreview",
    "teams",
    "mattermost",
    "embedly",
    "iframely",
    "redditbot",
    "pinterest",
    "vkshare",
    "applebot",
    "bingpreview",
];

/// Whether a `User-Agent` is a link-preview bot's.
pub fn is_preview_bot(user_agent: &str) -> bool {
    let agent = user_agent.to_ascii_lowercase();
    PREVIEW_BOTS.iter().any(|bot| agent.contains(bot))
}

/// What the front-end knows of a request to a link.
#[derive(Debug, Clone, Default)]
pub struct LinkRequest {
    /// `HEAD`: never counted.
    pub head: bool,
    /// A person's browser opening the link (a document navigation that did not ask for the
    /// bytes with `?dl=1`): the page.
    pub page: bool,
    /// A link-preview bot.
    pub bot: bool,
    /// A `Range` request: it may join its client's run.
    pub range: bool,
    /// The client's address: with its user agent, what makes its runs its own.
    pub client: Option<IpAddr>,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The unlock cookie the browser sent for this link, if any.
    pub unlock: Option<String>,
}

/// The answer to a request to a link, before any byte.
#[derive(Debug)]
pub enum LinkAnswer {
    /// Not an authentic live link here: the library's share service answers (its denial or
    /// `410`, and its audit).
    Library,
    /// The bytes, through the library's share service.
    Bytes {
        /// The link.
        link: LinkRow,
        /// A download was counted: to give back if the answer serves nothing.
        counted: bool,
        /// The link has a password or a limit: no cache may keep the answer.
        no_store: bool,
    },
    /// The link's page, for a person (`unlocked`: the password was given, or there is none).
    Page(LinkPage),
    /// A preview bot's page: metadata only.
    Preview(LinkPage),
    /// The password is needed first.
    Locked(LinkPage),
    /// Every allowed download was made.
    UsedUp(LinkRow),
    /// Past its expiry.
    Expired(LinkRow),
}

/// A link and its file, for its pages.
#[derive(Debug, Clone)]
pub struct LinkPage {
    /// The link.
    pub link: LinkRow,
    /// Its file.
    pub file: FileRow,
}

impl Domain {
    /// Decides what a request to the link `token` gets (see the module's documentation).
    ///
    /// # Errors
    /// The database's (fail closed: no byte).
    pub async fn open_link(&self, token: &str, request: &LinkRequest) -> Result<LinkAnswer> {
        let Some(link) = self.live_link(token).await? else { return Ok(LinkAnswer::Library) };
        if now() >= link.expires {
            return Ok(LinkAnswer::Expired(link));
        }
        // A link bound to a user is for that user's own requests: the library checks the
        // binding; no page speaks for it first.
        let bound = link.bound_to.is_some();
        let page = |link: LinkRow, file: std::sync::Arc<FileRow>| LinkPage { link, file: FileRow::clone(&file) };
        if request.bot && !bound {
            let Some(file) = self.db.file(&link.file_id, None).await? else { return Ok(LinkAnswer::Library) };
            return Ok(LinkAnswer::Preview(page(link, file)));
        }
        let unlocked = match (&link.password_hash, &request.unlock) {
            (None, _) => true,
            (Some(_), Some(cookie)) => self.db.is_unlocked(&sha256_hex(cookie), &link.link_id).await?,
            (Some(_), None) => false,
        };
        if !unlocked || (request.page && !bound) {
            let Some(file) = self.db.file(&link.file_id, None).await? else { return Ok(LinkAnswer::Library) };
            let page = page(link, file);
            return Ok(if unlocked { LinkAnswer::Page(page) } else { LinkAnswer::Locked(page) });
        }
        let no_store = link.password_hash.is_some() || link.max_downloads.is_some();
        if request.head {
            return Ok(LinkAnswer::Bytes { link, counted: false, no_store });
        }
        let client = sha256_hex(&format!(
            "{}|{}",
            request.client.map(|ip| ip.to_string()).unwrap_or_default(),
            request.user_agent
        ));
        if request.range && self.db.continue_run(&link.link_id, &client).await? {
            return Ok(LinkAnswer::Bytes { link, counted: false, no_store });
        }
        if !self.db.take_download(&link.link_id).await? {
            return Ok(LinkAnswer::UsedUp(link));
        }
        self.db.start_run(&link.link_id, &client).await?;
        if link.max_downloads.is_some_and(|max| link.downloads + 1 >= max) {
            // (`downloads` is as read before this one was counted.)
            let data = serde_json::json!({ "link_id": link.link_id, "file_id": link.file_id, "max_downloads": link.max_downloads });
            self.emit_later(WebhookEvent::LinkLimitReached, data);
        }
        Ok(LinkAnswer::Bytes { link, counted: true, no_store })
    }

    /// Gives back a download counted for a request that then served nothing.
    ///
    /// # Errors
    /// The database's.
    pub async fn give_back_download(&self, link: &LinkRow) -> Result<()> {
        Ok(self.db.give_back_download(&link.link_id).await?)
    }

    /// Checks a link's password; on success, the value of the cookie that unlocks the link for
    /// this browser, and how long it lasts. Attempts are limited per link (and address).
    ///
    /// # Errors
    /// [`Error::WrongCredentials`]; [`Error::TooManyAttempts`]; [`Error::NotFound`] for a link
    /// that is not live or has no password; the database's.
    pub async fn unlock_link(&self, token: &str, password: &str, ip: Option<IpAddr>) -> Result<(String, Duration)> {
        let Some(link) = self.live_link(token).await?.filter(|l| now() < l.expires) else {
            return Err(Error::NotFound("link"));
        };
        let Some(hash) = link.password_hash.clone() else { return Err(Error::NotFound("link")) };
        if !self.link_limiter.reserve(&link.link_id, ip) {
            self.metrics.denied("link_password_rate");
            self.audit.record(
                Event::new("link_unlock_refused", format!("link:{}", link.link_id))
                    .file_id(&link.file_id)
                    .link(&link.link_id),
            );
            return Err(Error::TooManyAttempts);
        }
        if !verify_off_the_workers(password.to_owned(), hash).await? {
            self.metrics.denied("link_password");
            self.audit.record(
                Event::new("link_unlock_failed", format!("link:{}", link.link_id))
                    .file_id(&link.file_id)
                    .link(&link.link_id),
            );
            return Err(Error::WrongCredentials);
        }
        self.link_limiter.succeeded(&link.link_id, ip);
        let cookie = random_token(32);
        let ttl = UNLOCK_TTL.min(Duration::from_secs((link.expires - now()).max(1) as u64));
        self.db.insert_unlock(&sha256_hex(&cookie), &link.link_id, now() + ttl.as_secs() as i64).await?;
        self.audit.record(
            Event::new("link_unlocked", format!("link:{}", link.link_id)).file_id(&link.file_id).link(&link.link_id),
        );
        Ok((cookie, ttl))
    }

    /// The link of an authentic token, unless revoked (`None`: the library answers).
    async fn live_link(&self, token: &str) -> Result<Option<LinkRow>> {
        let Some(link_id) = self.links.link_id(token) else { return Ok(None) };
        Ok(self.db.link(&link_id).await?.filter(|link| !link.revoked))
    }
}
