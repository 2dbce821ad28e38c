//! Single sign-on: sign-ins through the OpenID provider ([`crate::sso`]), users provisioned on
//! their first sign-in and linked by the provider's subject, roles from the claims at every
//! sign-in, and a local account never taken over by a provider's user of the same name.

use subtle::ConstantTimeEq;

use super::accounts::{NewSession, random_token, sha256_hex};
use super::audit::Event;
use super::{Domain, Error, Result};
use crate::db::{PendingSignIn, UserRow, now};
use crate::sso::SsoError;

/// How long a sign-in may take at the provider.
const SIGN_IN_WINDOW: i64 = 10 * 60;

impl From<SsoError> for Error {
    fn from(e: SsoError) -> Self {
        match e {
            SsoError::Unreachable(why) => {
                tracing::error!(error = %why, "the identity provider cannot be reached");
                Error::SignInRefused("The identity provider cannot be reached: try again in a moment.".into())
            }
            SsoError::Refused(why) => Error::SignInRefused(format!("Signing in failed: {why}.")),
        }
    }
}

impl Domain {
    /// Whether single sign-on is configured, and how the login page names the provider.
    pub fn sso_name(&self) -> Option<&str> {
        self.sso.as_ref().map(|s| s.config().name.as_str())
    }

    /// Whether local passwords log in.
    pub fn password_login(&self) -> bool {
        self.config.password_login
    }

    /// Starts a sign-in that returns to `next`: the provider's URL to send the browser to,
    /// and the `state` to keep in its cookie.
    ///
    /// # Errors
    /// [`Error::NotFound`] without single sign-on; [`Error::SignInRefused`] when the provider
    /// cannot be reached.
    pub async fn begin_sign_in(&self, next: &str) -> Result<(String, String)> {
        let sso = self.sso.as_ref().ok_or(Error::NotFound("page"))?;
        let begun = sso.begin().await?;
        let pending =
            PendingSignIn { verifier: begun.verifier, nonce: begun.nonce, next: next.to_owned(), created: now() };
        self.db.start_sign_in(&sha256_hex(&begun.state), &pending, SIGN_IN_WINDOW).await?;
        Ok((begun.url, begun.state))
    }

    /// Finishes a sign-in the provider sent back with `code` and `state`; `cookie` is the
    /// state this browser kept when it started. A new session, and where to go.
    ///
    /// # Errors
    /// [`Error::SignInRefused`] for a `state` that this browser did not start, that was used
    /// already or is too old, a code or token the checks refuse, a user the claims do not
    /// admit, or a local account of the same name; no session is created then.
    pub async fn finish_sign_in(
        &self,
        code: &str,
        state: &str,
        cookie: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<(NewSession, String)> {
        let result = self.sign_in_checked(code, state, cookie, replaces).await;
        match &result {
            Ok((session, _)) => self.audit.record(
                Event::new("login", format!("user:{}", session.user.username))
                    .user_id(&session.user.id)
                    .detail("single sign-on"),
            ),
            Err(e) => self.audit.record(Event::new("login_failed", "anonymous").detail(e.message())),
        }
        result
    }

    async fn sign_in_checked(
        &self,
        code: &str,
        state: &str,
        cookie: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<(NewSession, String)> {
        let sso = self.sso.as_ref().ok_or(Error::NotFound("page"))?;
        let refused = |why: &str| Error::SignInRefused(format!("Signing in failed: {why}."));
        let same_browser = cookie.is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(state.as_bytes())));
        if !same_browser {
            self.metrics.denied("sso_state");
            return Err(refused("this sign-in was not started in this browser"));
        }
        let pending = self.db.take_sign_in(&sha256_hex(state)).await?;
        let Some(pending) = pending.filter(|p| p.created >= now() - SIGN_IN_WINDOW) else {
            self.metrics.denied("sso_state");
            return Err(refused("this sign-in expired or was used already: start again"));
        };
        let identity = sso.finish(code, &pending.verifier, &pending.nonce).await.inspect_err(|e| {
            self.metrics.denied("sso_token");
            tracing::warn!(error = %e, "a sign-in was refused");
        })?;
        let Some((staff, superuser)) = sso.roles(&identity) else {
            self.metrics.denied("sso_role");
            return Err(refused("your account at the identity provider may not use this server"));
        };
        let user = self.provision(&identity, staff, superuser).await?;
        if let Some(old) = replaces {
            self.db.delete_session(&sha256_hex(old)).await?;
        }
        let id = random_token(32);
        let expires = now() + self.config.session_ttl.as_secs() as i64;
        self.db.create_session(&sha256_hex(&id), &user.id, &random_token(24), expires).await?;
        tracing::info!(username = %user.username, subject = %identity.subject, "signed in through the identity provider");
        Ok((NewSession { id, user }, pending.next))
    }

    /// The user of a provider's subject, with the roles the claims give; created on the first
    /// sign-in, unless a local account has the name.
    async fn provision(&self, identity: &crate::sso::SsoIdentity, staff: bool, superuser: bool) -> Result<UserRow> {
        if let Some(mut user) = self.db.user_by_identity(&identity.issuer, &identity.subject).await? {
            if (user.is_staff, user.is_superuser) != (staff || superuser, superuser) {
                self.db.set_roles(&user.id, staff, superuser).await?;
                (user.is_staff, user.is_superuser) = (staff || superuser, superuser);
            }
            return Ok(user);
        }
        let name = &identity.username;
        match self.check_new_user(name).await {
            Ok(()) => {}
            Err(Error::Exists(_)) => {
                self.metrics.denied("sso_name_taken");
                tracing::warn!(
                    username = %name,
                    subject = %identity.subject,
                    "a sign-in named a local account: `user link NAME --subject SUBJECT` lets it in"
                );
                return Err(Error::SignInRefused(format!(
                    "Signing in failed: an account named {name} exists already here, and is not yours to take over: \
                     ask an operator to link it."
                )));
            }
            Err(e) => return Err(e),
        }
        // No password: such a user signs in only through the provider.
        let user = self.db.create_user(name, "", staff, superuser).await?;
        if let Err(e) = self.db.link_identity(&identity.issuer, &identity.subject, &user.id).await {
            // Linked by a parallel first sign-in of the same person: use that one.
            self.db.delete_user(&user.id).await?;
            return match self.db.user_by_identity(&identity.issuer, &identity.subject).await? {
                Some(linked) => Ok(linked),
                None => Err(e.into()),
            };
        }
        tracing::info!(username = %name, subject = %identity.subject, "user provisioned by the identity provider");
        Ok(user)
    }

    /// Links the provider's `subject` to the existing user `name` (the operator's decision for
    /// a sign-in refused because a local account has its name).
    ///
    /// # Errors
    /// [`Error::Invalid`] without single sign-on, [`Error::NotFound`] for an unknown user,
    /// [`Error::Exists`] for a subject linked already.
    pub async fn link_user(&self, name: &str, subject: &str) -> Result<UserRow> {
        let sso =
            self.sso.as_ref().ok_or_else(|| Error::Invalid("single sign-on is not configured (oidc_issuer)".into()))?;
        let user = self.user_named(name).await?;
        let issuer = &sso.config().issuer;
        if self.db.user_by_identity(issuer, subject).await?.is_some() {
            return Err(Error::Exists(format!("subject {subject} is linked to a user already")));
        }
        self.db.link_identity(issuer, subject, &user.id).await?;
        tracing::info!(username = %user.username, subject, "linked to the identity provider by an operator");
        Ok(user)
    }

    /// Where the browser goes after our logout: the provider's logout when it has one.
    pub async fn sign_out_url(&self) -> Option<String> {
        self.sso.as_ref()?.logout_url().await
    }
}
