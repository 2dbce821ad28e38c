//! Access rules: the built-in ones and custom async ones.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::PrivateFile;

/// Decides whether a request may read a file.
///
/// A rule runs **before** anything about the file is revealed: a denied request gets the same
/// answer whether or not the file exists. Built-ins: [`allow_authenticated`], [`allow_staff`],
/// [`allow_superuser`] (the default, as in the reference). A custom rule is any async closure
/// taking the [`PrivateFile`] (cheap to clone), or a type implementing this trait:
///
/// ```
/// use private_storage::{AccessRule, PrivateFile};
///
/// // Each user reads only below `users/<their id>/`; staff read everything.
/// let own_folder = |file: PrivateFile| async move {
///     match file.user() {
///         Some(user) if user.is_staff() => true,
///         Some(user) => file.key().as_str().starts_with(&format!("users/{}/", user.id())),
///         None => false,
///     }
/// };
/// # fn takes(_: impl AccessRule) {}
/// takes(own_folder);
/// ```
///
/// The key the rule sees is canonical: `users/1/../6/x` never reaches a rule, so a prefix
/// check like the one above cannot be bypassed with dot segments or encodings.
///
/// A rule that needs I/O (a database, a remote service) should deny when that I/O fails:
/// nothing is served without a positive decision.
#[async_trait]
pub trait AccessRule: Send + Sync + 'static {
    /// Whether the request in `file` may read it.
    async fn allows(&self, file: &PrivateFile) -> bool;
}

#[async_trait]
impl<F, Fut> AccessRule for F
where
    F: Fn(PrivateFile) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    async fn allows(&self, file: &PrivateFile) -> bool {
        self(file.clone()).await
    }
}

#[async_trait]
impl AccessRule for Arc<dyn AccessRule> {
    async fn allows(&self, file: &PrivateFile) -> bool {
        (**self).allows(file).await
    }
}

/// Allows any authenticated user. See [`allow_authenticated`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAuthenticated;

/// Allows authenticated staff users. See [`allow_staff`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowStaff;

/// Allows authenticated superusers. See [`allow_superuser`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowSuperuser;

/// Allows any authenticated user.
pub fn allow_authenticated() -> AllowAuthenticated {
    AllowAuthenticated
}

/// Allows authenticated staff users.
pub fn allow_staff() -> AllowStaff {
    AllowStaff
}

/// Allows authenticated superusers: the default rule.
pub fn allow_superuser() -> AllowSuperuser {
    AllowSuperuser
}

#[async_trait]
impl AccessRule for AllowAuthenticated {
    async fn allows(&self, file: &PrivateFile) -> bool {
        file.user().is_some_and(|u| u.is_authenticated())
    }
}

#[async_trait]
impl AccessRule for AllowStaff {
    async fn allows(&self, file: &PrivateFile) -> bool {
        file.user().is_some_and(|u| u.is_authenticated() && u.is_staff())
    }
}

#[async_trait]
impl AccessRule for AllowSuperuser {
    async fn allows(&self, file: &PrivateFile) -> bool {
        file.user().is_some_and(|u| u.is_authenticated() && u.is_superuser())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CurrentUser, Identity, MemoryStorage, ObjectKey, User};

    struct Anonymous;
    impl Identity for Anonymous {
        fn id(&self) -> &str {
            ""
        }
        fn is_authenticated(&self) -> bool {
            false
        }
        fn is_staff(&self) -> bool {
            true
        }
        fn is_superuser(&self) -> bool {
            true
        }
    }

    fn file_for(user: Option<CurrentUser>) -> PrivateFile {
        let mut req = http::Request::new(());
        if let Some(u) = user {
            req.extensions_mut().insert(u);
        }
        let (parts, ()) = req.into_parts();
        PrivateFile::new(parts, Arc::new(MemoryStorage::new()), ObjectKey::new("a.txt").unwrap())
    }

    #[tokio::test]
    async fn built_in_rules_follow_the_reference_semantics() {
        let rules: [(&str, Arc<dyn AccessRule>); 3] = [
            ("authenticated", Arc::new(allow_authenticated())),
            ("staff", Arc::new(allow_staff())),
            ("superuser", Arc::new(allow_superuser())),
        ];
        // (who, [authenticated, staff, superuser])
        let table: [(&str, Option<CurrentUser>, [bool; 3]); 5] = [
            ("anonymous", None, [false, false, false]),
            ("unauthenticated flags", Some(CurrentUser::new(Anonymous)), [false, false, false]),
            ("plain user", Some(CurrentUser::new(User::new("1"))), [true, false, false]),
            ("staff", Some(CurrentUser::new(User::new("2").staff())), [true, true, false]),
            ("superuser", Some(CurrentUser::new(User::new("3").superuser())), [true, false, true]),
        ];
        for (who, user, expected) in table {
            let file = file_for(user);
            for ((name, rule), want) in rules.iter().zip(expected) {
                assert_eq!(rule.allows(&file).await, want, "{name} rule for {who}");
            }
        }
    }

    #[tokio::test]
    async fn closures_are_rules() {
        let rule = |file: PrivateFile| async move { file.key().as_str() == "a.txt" };
        assert!(rule.allows(&file_for(None)).await);
    }
}
