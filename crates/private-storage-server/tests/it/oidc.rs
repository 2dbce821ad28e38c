//! Single sign-on against a real OpenID provider on loopback: `oidc-provider` (npm, OpenID
//! certified), configured by `tests/node/oidc-provider.mjs` with this server as a client and
//! test accounts. Headless Chromium signs in through the provider's pages; the refusals are
//! driven through the same pages by an HTTP client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{Auth, TestServer, pdf, server};

const CLIENT_ID: &str = "private-storage";
const CLIENT_SECRET: &str = "a client secret only the tests know";
/// Turns a hang into a failure; never a pause.
const BOUND: Duration = Duration::from_secs(60);

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The provider, the server as its client, and the files that say who may sign in.
struct World {
    s: TestServer,
    base: String,
    accounts: PathBuf,
    disabled: PathBuf,
    forge: PathBuf,
    _provider: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, disabled) = (dir.path().join("accounts.json"), dir.path().join("disabled.txt"));
        let forge = dir.path().join("forge.txt");
        std::fs::write(
            &accounts,
            r#"{"stella": {"groups": ["staff", "members"]}, "max": {"groups": ["members"]},
                "mallory": {"groups": ["outsiders"]}, "ada": {"groups": ["members"]},
                "renamed": {"groups": ["members"], "preferred_username": "first-name"}}"#,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut provider = tokio::process::Command::new("node")
            .current_dir(scripts())
            .arg("oidc-provider.mjs")
            .args([CLIENT_ID, CLIENT_SECRET, &format!("{base}/login/oidc/callback"), &format!("{base}/login")])
            .arg(&accounts)
            .arg(&disabled)
            .arg(&forge)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(provider.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(BOUND, lines.next_line()).await.expect("the provider starts").unwrap().unwrap();
        let issuer = line.strip_prefix("issuer ").expect("its issuer").to_owned();
        // Keep reading: a closed pipe would end the provider at its next line of output.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut settings = vec![
            ("public_url", base.as_str()),
            ("oidc_issuer", issuer.as_str()),
            ("oidc_client_id", CLIENT_ID),
            ("oidc_client_secret", CLIENT_SECRET),
            ("oidc_scopes", "profile,groups"),
            ("oidc_staff_values", "staff"),
            ("oidc_allowed_values", "staff,members"),
            ("oidc_name", "Test IdP"),
        ];
        settings.extend_from_slice(extra);
        let s = server(&settings).await;
        tokio::spawn(private_storage_server::serve(s.state.clone(), listener, std::future::pending()));
        Self { s, base, accounts, disabled, forge, _provider: provider, _dir: dir }
    }

    /// Signs `login` in through the provider's pages with an HTTP client, up to (not into) the
    /// return to this server: the client, which holds the sign-in cookie, and the return URL;
    /// or the provider's page where it stopped.
    async fn try_to_the_return(&self, login: &str) -> Result<(reqwest::Client, String), String> {
        let http =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut response = http.get(format!("{}/login/oidc", self.base)).send().await.unwrap();
        let mut url = format!("{}/login/oidc", self.base);
        for _ in 0..20 {
            if response.status().is_redirection() {
                let location = response.headers()["location"].to_str().unwrap();
                url = reqwest::Url::parse(&url).unwrap().join(location).unwrap().to_string();
                if url.starts_with(&format!("{}/login/oidc/callback", self.base)) {
                    return Ok((http, url));
                }
                response = http.get(&url).send().await.unwrap();
                continue;
            }
            // One of the provider's forms: log in with any password, or consent.
            let page = response.text().await.unwrap();
            assert!(!url.starts_with(&self.base), "stayed on this server: {page}");
            let Some(action) = between(&page, "action=\"", "\"") else { return Err(page) };
            let mut fields = vec![("login".to_owned(), login.to_owned()), ("password".to_owned(), "any".to_owned())];
            let mut rest = page.as_str();
            while let Some(at) = rest.find("<input type=\"hidden\" name=\"") {
                rest = &rest[at + 27..];
                let name = &rest[..rest.find('"').unwrap()];
                let value = between(rest, "value=\"", "\"").unwrap_or_default();
                fields.push((name.to_owned(), value));
            }
            url = reqwest::Url::parse(&url).unwrap().join(&action).unwrap().to_string();
            response = http.post(&url).form(&fields).send().await.unwrap();
        }
        panic!("the provider never sent the browser back");
    }

    async fn to_the_return(&self, login: &str) -> (reqwest::Client, String) {
        self.try_to_the_return(login).await.unwrap_or_else(|page| panic!("the provider stopped: {page}"))
    }

    /// Follows the return to this server: its status, page, and whether a session was set.
    async fn come_back(&self, http: &reqwest::Client, url: &str) -> (u16, String, bool) {
        let response = http.get(url).send().await.unwrap();
        let session = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("ps_session=") && !c.to_str().unwrap().contains("Max-Age=0"));
        (response.status().as_u16(), response.text().await.unwrap(), session)
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    Some(text[from..from + text[from..].find(end)?].replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_provider_in_chromium_and_staff_claims_apply() {
    let world = World::start(&[]).await;
    // A file of someone else's: staff (a claim of the provider's) see it.
    let bob = world.s.user("bob", false, false).await;
    world.s.upload("/api/files", &Auth::Bearer(&bob), &[], "bobs.pdf", &pdf(2000)).await;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("server-sso.png");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .current_dir(scripts())
            .arg("sso.mjs")
            .args([&world.base, "stella", "All files"])
            .arg(&screenshot)
            .output(),
    )
    .await
    .expect("the browser finishes")
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("sso flow: ok"), "{text}");
    let stella = world.s.state.db.user_by_name("stella").await.unwrap().expect("provisioned at the first sign-in");
    assert!(stella.is_staff && !stella.is_superuser, "roles from the groups claim");
    assert!(stella.password_hash.is_empty(), "no password: only the provider signs her in");
    let linked = world.s.state.db.user_by_identity(&issuer(&world), "stella").await.unwrap();
    assert_eq!(linked.map(|u| u.id), Some(stella.id), "linked by the provider's subject");
}

fn issuer(world: &World) -> String {
    world.s.state.config.sso.as_ref().unwrap().issuer.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_the_checks_refuse_create_no_session() {
    let world = World::start(&[]).await;
    // The way it works: a session, the account provisioned.
    let (http, back) = world.to_the_return("max").await;
    let (status, page, session) = world.come_back(&http, &back).await;
    assert_eq!((status, session), (303, true), "{page}");
    // The same return again (a replayed code and state), even with the state's cookie: the
    // sign-in was used already.
    let state = back.split("state=").nth(1).unwrap().split('&').next().unwrap();
    let replay = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let replayed = replay.get(&back).header("cookie", format!("ps_sign_in={state}")).send().await.unwrap();
    assert_eq!(replayed.status(), 403);
    assert!(replayed.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().starts_with("ps_session=")));
    assert!(replayed.text().await.unwrap().contains("expired or was used already"));
    let (status, _, session) = world.come_back(&http, &back).await;
    assert_eq!((status, session), (403, false), "and the browser's own cookie is gone");

    // A tampered state, or a return to another browser than the one that started it.
    let (http, back) = world.to_the_return("max").await;
    let tampered = back.replace("state=", "state=x");
    let (status, page, session) = world.come_back(&http, &tampered).await;
    assert_eq!((status, session), (403, false));
    assert!(page.contains("not started in this browser"), "{page}");
    let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (status, _, session) = world.come_back(&stranger, &back).await;
    assert_eq!((status, session), (403, false), "the state cookie is this browser's");

    // Claims that do not admit: refused, and no account made.
    let (http, back) = world.to_the_return("mallory").await;
    let (status, page, session) = world.come_back(&http, &back).await;
    assert_eq!((status, session), (403, false));
    assert!(page.contains("may not use this server"), "{page}");
    assert!(world.s.state.db.user_by_name("mallory").await.unwrap().is_none());

    // A local account of the same name is never taken over...
    world.s.user("ada", false, false).await;
    let (http, back) = world.to_the_return("ada").await;
    let (status, page, session) = world.come_back(&http, &back).await;
    assert_eq!((status, session), (403, false));
    assert!(page.contains("an account named ada exists already"), "{page}");
    // ...until an operator links it (`user link ada --subject ada`).
    let local = world.s.state.domain.link_user("ada", "ada").await.unwrap();
    let (http, back) = world.to_the_return("ada").await;
    assert!(world.come_back(&http, &back).await.2, "linked: she signs in");
    let linked = world.s.state.db.user_by_identity(&issuer(&world), "ada").await.unwrap().unwrap();
    assert_eq!(linked.id, local.id, "as the local account");
    assert!(world.s.state.domain.link_user("max", "ada").await.is_err(), "a subject links one user");

    // Disabled at the provider: it no longer signs them in, nothing comes back here.
    std::fs::write(&world.disabled, "max\n").unwrap();
    let stopped = world.try_to_the_return("max").await.map(|(_, back)| back).unwrap_err();
    assert!(stopped.contains("something went wrong"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_follow_the_claims_and_the_subject_not_the_name_links_the_user() {
    let world = World::start(&[]).await;
    let (http, back) = world.to_the_return("renamed").await;
    assert!(world.come_back(&http, &back).await.2);
    let first = world.s.state.db.user_by_name("first-name").await.unwrap().expect("named by the claim");
    assert!(!first.is_staff);
    // Renamed and made staff at the provider: the same user (by subject), now staff.
    std::fs::write(&world.accounts, r#"{"renamed": {"groups": ["staff"], "preferred_username": "second-name"}}"#)
        .unwrap();
    let (http, back) = world.to_the_return("renamed").await;
    assert!(world.come_back(&http, &back).await.2);
    assert!(world.s.state.db.user_by_name("second-name").await.unwrap().is_none(), "not a second account");
    let again = world.s.state.db.user_by_id(&first.id).await.unwrap().unwrap();
    assert!(again.is_staff, "roles follow the claims at each sign-in");

    // Removed here, the next sign-in makes the account afresh.
    assert!(world.s.state.db.delete_user(&first.id).await.unwrap());
    let (http, back) = world.to_the_return("renamed").await;
    assert!(world.come_back(&http, &back).await.2);
    let fresh = world.s.state.db.user_by_name("second-name").await.unwrap().expect("provisioned again");
    assert_ne!(fresh.id, first.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_password_login_off_only_the_provider_signs_in() {
    let world = World::start(&[("password_login", "false")]).await;
    world.s.user("local", false, false).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{}/login?next=/files", world.base)).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login/oidc?next=%2Ffiles", "straight to the provider");
    let refused = world.s.state.domain.login("local", "password-local", None, None).await;
    assert_eq!(refused.unwrap_err().status(), 403, "passwords do not log in");
    // API tokens still work.
    let token = world.s.user("robot", false, false).await;
    assert_eq!(world.s.get("/api/files", &Auth::Bearer(&token)).await.status, 200);
}

/// ID tokens the provider's answer carries, made bad one way each (by the test provider's
/// FORGE switch): every one is refused, and no session is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_mismatched_id_tokens_are_refused() {
    let world = World::start(&[]).await;
    for (mode, why) in [
        ("aud", "another audience"),
        ("exp", "expired"),
        ("nonce", "another sign-in's nonce"),
        ("key", "signed by a key the provider never published"),
    ] {
        std::fs::write(&world.forge, mode).unwrap();
        let (http, back) = world.to_the_return("max").await;
        let (status, page, session) = world.come_back(&http, &back).await;
        assert_eq!((status, session), (403, false), "{why}: {page}");
        assert!(page.contains("token was refused"), "{why}: {page}");
    }
    assert!(world.s.state.db.user_by_name("max").await.unwrap().is_none(), "nobody was provisioned");
    // The same sign-in with an honest token works.
    std::fs::write(&world.forge, "").unwrap();
    let (http, back) = world.to_the_return("max").await;
    assert!(world.come_back(&http, &back).await.2);
    // The provider rotates to a key it publishes only now: its keys are fetched again.
    std::fs::write(&world.forge, "rotate").unwrap();
    let (http, back) = world.to_the_return("max").await;
    let (status, page, session) = world.come_back(&http, &back).await;
    assert_eq!((status, session), (303, true), "a rotated key is followed: {page}");
}
