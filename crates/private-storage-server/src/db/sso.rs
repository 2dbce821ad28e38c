//! Single sign-on: identities linked to users, and sign-ins under way.

use super::rows::{Columns, FromRow, UserRow};
use super::{Arg, Db, DbResult, now};

/// A sign-in on its way to the provider: what its return needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    /// The PKCE verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Where to go once signed in.
    pub next: String,
    /// When it started.
    pub created: i64,
}

impl FromRow for PendingSignIn {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            verifier: row.text("verifier")?,
            nonce: row.text("nonce")?,
            next: row.text("next")?,
            created: row.int("created")?,
        })
    }
}

impl Db {
    /// The user linked to a provider's subject.
    pub async fn user_by_identity(&self, issuer: &str, subject: &str) -> DbResult<Option<UserRow>> {
        self.optional(
            "SELECT u.id, u.username, u.password_hash, u.is_staff, u.is_superuser, u.created FROM users u \
             JOIN user_identities i ON i.user_id = u.id WHERE i.issuer = $1 AND i.subject = $2",
            &[Arg::Text(issuer), Arg::Text(subject)],
        )
        .await
    }

    /// Links a provider's subject to a user.
    pub async fn link_identity(&self, issuer: &str, subject: &str, user_id: &str) -> DbResult<()> {
        self.execute(
            "INSERT INTO user_identities (issuer, subject, user_id) VALUES ($1, $2, $3)",
            &[Arg::Text(issuer), Arg::Text(subject), Arg::Text(user_id)],
        )
        .await?;
        Ok(())
    }

    /// Sets a user's roles.
    pub async fn set_roles(&self, user_id: &str, staff: bool, superuser: bool) -> DbResult<()> {
        self.execute_changing(
            "UPDATE users SET is_staff = $1, is_superuser = $2 WHERE id = $3",
            &[Arg::Int((staff || superuser).into()), Arg::Int(superuser.into()), Arg::Text(user_id)],
            &[super::Change::Users],
        )
        .await?;
        Ok(())
    }

    /// Keeps a sign-in under way (by the hash of its `state`); those older than `max_age`
    /// seconds are forgotten meanwhile.
    pub async fn start_sign_in(&self, state_hash: &str, pending: &PendingSignIn, max_age: i64) -> DbResult<()> {
        self.execute("DELETE FROM sso_logins WHERE created < $1", &[Arg::Int(now() - max_age)]).await?;
        self.execute(
            "INSERT INTO sso_logins (state_hash, verifier, nonce, next, created) VALUES ($1, $2, $3, $4, $5)",
            &[
                Arg::Text(state_hash),
                Arg::Text(&pending.verifier),
                Arg::Text(&pending.nonce),
                Arg::Text(&pending.next),
                Arg::Int(pending.created),
            ],
        )
        .await?;
        Ok(())
    }

    /// Takes a sign-in under way, once: a second take of the same `state` finds nothing.
    pub async fn take_sign_in(&self, state_hash: &str) -> DbResult<Option<PendingSignIn>> {
        let found: Option<PendingSignIn> = self
            .optional(
                "SELECT verifier, nonce, next, created FROM sso_logins WHERE state_hash = $1",
                &[Arg::Text(state_hash)],
            )
            .await?;
        let taken = self.execute("DELETE FROM sso_logins WHERE state_hash = $1", &[Arg::Text(state_hash)]).await?;
        Ok(found.filter(|_| taken == 1))
    }
}
