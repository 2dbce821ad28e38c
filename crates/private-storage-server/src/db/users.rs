//! Accounts, API tokens and sessions (of tokens and sessions, only SHA-256 hashes are kept).

use std::sync::Arc;

use super::cache::CachedSession;
use super::rows::{Number, SessionUser, UserRow};
use super::{Arg, Change, Db, DbResult, new_id, now};

const USER: &str = "SELECT id, username, password_hash, is_staff, is_superuser, created FROM users";

impl Db {
    /// Creates a user ([`DbError::Conflict`](super::DbError::Conflict) if the name is taken).
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        staff: bool,
        superuser: bool,
    ) -> DbResult<UserRow> {
        let row = UserRow {
            id: new_id(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            is_staff: staff || superuser,
            is_superuser: superuser,
            created: now(),
        };
        self.execute(
            "INSERT INTO users (id, username, password_hash, is_staff, is_superuser, created) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Arg::Text(&row.id),
                Arg::Text(&row.username),
                Arg::Text(&row.password_hash),
                Arg::Int(row.is_staff.into()),
                Arg::Int(row.is_superuser.into()),
                Arg::Int(row.created),
            ],
        )
        .await?;
        Ok(row)
    }

    /// A user by name.
    pub async fn user_by_name(&self, username: &str) -> DbResult<Option<UserRow>> {
        self.optional(&format!("{USER} WHERE username = $1"), &[Arg::Text(username)]).await
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &str) -> DbResult<Option<UserRow>> {
        self.optional(&format!("{USER} WHERE id = $1"), &[Arg::Text(id)]).await
    }

    /// Every user, by name.
    pub async fn users(&self) -> DbResult<Vec<UserRow>> {
        self.all(&format!("{USER} ORDER BY username"), &[]).await
    }

    /// How many users there are.
    pub async fn user_count(&self) -> DbResult<i64> {
        Ok(self.optional::<Number>("SELECT COUNT(*) AS n FROM users", &[]).await?.map_or(0, |n| n.0))
    }

    /// Sets a user's password hash and ends their sessions. `false` if no such user.
    pub async fn set_password(&self, user_id: &str, password_hash: &str) -> DbResult<bool> {
        let changed = self
            .execute_changing(
                "UPDATE users SET password_hash = $1 WHERE id = $2",
                &[Arg::Text(password_hash), Arg::Text(user_id)],
                &[Change::Users],
            )
            .await?;
        self.execute_changing("DELETE FROM sessions WHERE user_id = $1", &[Arg::Text(user_id)], &[Change::Users])
            .await?;
        Ok(changed > 0)
    }

    /// Deletes a user with their sessions and tokens (and, by cascade, any file records left).
    /// `false` if no such user.
    pub async fn delete_user(&self, user_id: &str) -> DbResult<bool> {
        // Their records go by cascade.
        let sql = "DELETE FROM users WHERE id = $1";
        Ok(self.execute_changing(sql, &[Arg::Text(user_id)], &[Change::Users, Change::Files]).await? > 0)
    }

    /// Stores a token's hash for a user.
    pub async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> DbResult<String> {
        let id = new_id();
        self.execute(
            "INSERT INTO tokens (id, user_id, name, token_hash, created) VALUES ($1, $2, $3, $4, $5)",
            &[Arg::Text(&id), Arg::Text(user_id), Arg::Text(name), Arg::Text(token_hash), Arg::Int(now())],
        )
        .await?;
        Ok(id)
    }

    /// The user a token hash belongs to.
    /// The user a token hash belongs to (cached: see [`super::cache`]).
    pub async fn user_by_token(&self, token_hash: &str) -> DbResult<Option<Arc<UserRow>>> {
        if let Some(user) = self.caches.token(token_hash) {
            return Ok(Some(user));
        }
        let epoch = self.caches.epoch();
        let sql = "SELECT u.id, u.username, u.password_hash, u.is_staff, u.is_superuser, u.created \
                   FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1";
        let user = self.optional::<UserRow>(sql, &[Arg::Text(token_hash)]).await?.map(Arc::new);
        if let Some(user) = &user {
            self.caches.keep_token(token_hash, user.clone(), epoch);
        }
        Ok(user)
    }

    /// Revokes a user's token by name, or every token of the user with `None`. Returns how many.
    pub async fn revoke_tokens(&self, user_id: &str, name: Option<&str>) -> DbResult<u64> {
        match name {
            Some(name) => {
                self.execute_changing(
                    "DELETE FROM tokens WHERE user_id = $1 AND name = $2",
                    &[Arg::Text(user_id), Arg::Text(name)],
                    &[Change::Tokens],
                )
                .await
            }
            None => {
                self.execute_changing("DELETE FROM tokens WHERE user_id = $1", &[Arg::Text(user_id)], &[Change::Tokens])
                    .await
            }
        }
    }

    /// Stores a session.
    pub async fn create_session(&self, id_hash: &str, user_id: &str, csrf: &str, expires: i64) -> DbResult<()> {
        self.execute(
            "INSERT INTO sessions (id_hash, user_id, csrf, expires) VALUES ($1, $2, $3, $4)",
            &[Arg::Text(id_hash), Arg::Text(user_id), Arg::Text(csrf), Arg::Int(expires)],
        )
        .await?;
        Ok(())
    }

    /// The user and CSRF token of a live session.
    /// (Cached: see [`super::cache`]; an entry past the session's end is not an answer.)
    pub async fn session(&self, id_hash: &str) -> DbResult<Option<SessionUser>> {
        let now = now();
        if let Some(cached) = self.caches.session(id_hash)
            && cached.expires > now
        {
            return Ok(Some(cached.found.clone()));
        }
        let epoch = self.caches.epoch();
        let sql = "SELECT u.id, u.username, u.password_hash, u.is_staff, u.is_superuser, u.created, s.csrf, s.expires \
                   FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires > $2";
        let found = self.optional::<CachedSession>(sql, &[Arg::Text(id_hash), Arg::Int(now)]).await?;
        Ok(found.map(|found| {
            let session = found.found.clone();
            self.caches.keep_session(id_hash, Arc::new(found), epoch);
            session
        }))
    }

    /// Ends a session.
    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        self.execute_changing(
            "DELETE FROM sessions WHERE id_hash = $1",
            &[Arg::Text(id_hash)],
            &[Change::Session(id_hash)],
        )
        .await?;
        Ok(())
    }

    /// Forgets expired sessions and revocations.
    pub async fn purge_expired(&self) -> DbResult<()> {
        self.execute("DELETE FROM sessions WHERE expires <= $1", &[Arg::Int(now())]).await?;
        self.execute("DELETE FROM share_revoked WHERE expires <= $1", &[Arg::Int(now())]).await?;
        self.execute("DELETE FROM link_unlocks WHERE expires <= $1", &[Arg::Int(now())]).await?;
        // Changes an hour old were applied by every process that polls; the newest stays, as
        // the mark the next one counts from.
        let sql = "DELETE FROM cache_events WHERE at <= $1 AND seq < (SELECT MAX(seq) FROM cache_events)";
        self.execute(sql, &[Arg::Int(now() - 3600)]).await?;
        self.execute("DELETE FROM share_runs WHERE last_at <= $1", &[Arg::Int(now() - super::links::RUN_WINDOW)])
            .await?;
        Ok(())
    }
}
