//! Single sign-on: the OpenID Connect relying party. Authorization Code flow with PKCE, `state`
//! and `nonce`; the protocol and the JOSE are the `openidconnect` crate's: the ID token's
//! signature against the provider's JWKS (fetched again once when a token names a key it does
//! not know, so key rotation is followed), `iss`, `aud`, `azp`, `exp`, `nonce`, and `iat` not in
//! the future.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    TokenResponse,
};

/// What the configuration says about single sign-on.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// The provider (discovery from `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// This server as the provider's client.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// Where the provider sends people back (`…/login/oidc/callback`).
    pub redirect_url: String,
    /// Where the provider's logout sends people back (`…/login`).
    pub post_logout_url: String,
    /// The claim that names the user (`preferred_username`, `email`, …).
    pub username_claim: String,
    /// The claim whose values give roles and admission (`groups`, `roles`, …).
    pub roles_claim: String,
    /// Values of the roles claim that make staff.
    pub staff_values: Vec<String>,
    /// Values of the roles claim that make a superuser.
    pub superuser_values: Vec<String>,
    /// Values of the roles claim one of which a user needs to log in (empty: anyone).
    pub allowed_values: Vec<String>,
    /// How the login page names the provider ("Sign in with …").
    pub name: String,
}

/// Why a sign-in did not work.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached or did not answer as a provider does.
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    /// The provider's answer was refused: a bad token, a refused code, a missing claim.
    #[error("{0}")]
    Refused(String),
}

/// A sign-in on its way to the provider: where to send the browser, and what to keep until it
/// comes back.
#[derive(Debug)]
pub struct Begun {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` (also set as a cookie of the browser).
    pub state: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    /// The provider.
    pub issuer: String,
    /// The provider's id of the person: what links them to a user here.
    pub subject: String,
    /// The name the username claim gives.
    pub username: String,
    /// The values of the roles claim.
    pub roles: Vec<String>,
}

type Metadata = ProviderMetadataWithLogout;

/// The relying party: configuration, an HTTP client that follows no redirect (as the crate
/// advises against SSRF), and the provider's metadata and keys, fetched on first use.
#[derive(Debug)]
pub struct Sso {
    config: SsoConfig,
    http: Http,
    metadata: tokio::sync::RwLock<Option<Arc<Metadata>>>,
}

impl Sso {
    /// A relying party for `config` (nothing is fetched until the first sign-in).
    pub fn new(config: SsoConfig) -> Self {
        private_storage::install_tls_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client");
        Self { config, http: Http(http), metadata: Default::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &SsoConfig {
        &self.config
    }

    /// The provider's metadata and keys: cached, or fetched (again with `refresh`).
    async fn metadata(&self, refresh: bool) -> Result<Arc<Metadata>, SsoError> {
        if !refresh && let Some(cached) = self.metadata.read().await.as_ref() {
            return Ok(cached.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| SsoError::Unreachable(e.to_string()))?;
        let fetched =
            Metadata::discover_async(issuer, &self.http).await.map_err(|e| SsoError::Unreachable(e.to_string()))?;
        let fetched = Arc::new(fetched);
        *self.metadata.write().await = Some(fetched.clone());
        Ok(fetched)
    }

    fn client(&self, metadata: &Metadata) -> Result<ConfiguredClient, SsoError> {
        let redirect =
            RedirectUrl::new(self.config.redirect_url.clone()).map_err(|e| SsoError::Refused(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in.
    ///
    /// # Errors
    /// [`SsoError::Unreachable`] when the provider's metadata cannot be fetched.
    pub async fn begin(&self) -> Result<Begun, SsoError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Finishes a sign-in: exchanges the code (with the PKCE verifier), checks the ID token and
    /// reads the identity from it.
    ///
    /// # Errors
    /// [`SsoError::Refused`] for a code the provider refuses and for every failed check of
    /// the token; [`SsoError::Unreachable`] when the provider cannot be reached.
    pub async fn finish(&self, code: &str, verifier: &str, nonce: &str) -> Result<SsoIdentity, SsoError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata)?;
        let exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Unreachable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        let tokens = exchange.request_async(&self.http).await.map_err(|e| match e {
            openidconnect::RequestTokenError::ServerResponse(answer) => {
                SsoError::Refused(format!("the identity provider refused the sign-in ({})", answer.error()))
            }
            other => SsoError::Unreachable(other.to_string()),
        })?;
        let token = tokens.id_token().ok_or_else(|| SsoError::Refused("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        match self.verify(&client, token, &nonce) {
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                // A key the provider rotated in since its keys were fetched: fetch them again.
                let metadata = self.metadata(true).await?;
                let client = self.client(&metadata)?;
                self.verify(&client, token, &nonce).map_err(refused)?;
            }
            verified => verified.map_err(refused)?,
        }
        let mut claims = payload(token)?;
        let wanted = [&self.config.username_claim, &self.config.roles_claim];
        if wanted.iter().any(|name| claims.get(name.as_str()).is_none())
            && let Some(endpoint) = metadata.userinfo_endpoint()
        {
            // Providers that keep profile claims out of the ID token (as the specification
            // allows) give them at the userinfo endpoint: for the same subject only.
            let info = self.user_info(endpoint.url().as_str(), tokens.access_token().secret()).await?;
            if info.get("sub") != claims.get("sub") {
                return Err(SsoError::Refused("the userinfo answer is about someone else".into()));
            }
            for name in wanted {
                if let (None, Some(value)) = (claims.get(name.as_str()), info.get(name.as_str())) {
                    claims[name.as_str()] = value.clone();
                }
            }
        }
        self.identity(&claims)
    }

    /// The userinfo endpoint's claims for an access token.
    async fn user_info(&self, endpoint: &str, access_token: &str) -> Result<serde_json::Value, SsoError> {
        let response = self.http.0.get(endpoint).bearer_auth(access_token).send().await;
        let response = response.map_err(|e| SsoError::Unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(SsoError::Refused(format!("the userinfo endpoint answered {}", response.status())));
        }
        let body = response.bytes().await.map_err(|e| SsoError::Unreachable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|_| SsoError::Refused("the userinfo answer is not JSON".into()))
    }

    fn verify(
        &self,
        client: &ConfiguredClient,
        token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<(), openidconnect::ClaimsVerificationError> {
        let verifier = client.id_token_verifier().set_issue_time_verifier_fn(|issued| {
            // A token from the future (beyond a minute of clock skew) is refused.
            match issued <= chrono::Utc::now() + chrono::Duration::seconds(60) {
                true => Ok(()),
                false => Err("issued in the future".to_owned()),
            }
        });
        token.claims(&verifier, nonce).map(|_| ())
    }

    /// The identity in verified claims: issuer and subject, and the configured claims.
    fn identity(&self, claims: &serde_json::Value) -> Result<SsoIdentity, SsoError> {
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let username = text(&self.config.username_claim).filter(|u| !u.is_empty()).ok_or_else(|| {
            SsoError::Refused(format!("the identity provider sent no {} claim", self.config.username_claim))
        })?;
        let roles = match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::Array(values)) => {
                values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            Some(serde_json::Value::String(value)) => vec![value.clone()],
            _ => Vec::new(),
        };
        Ok(SsoIdentity {
            // The token's `iss` was checked to be this one.
            issuer: self.config.issuer.clone(),
            subject: text("sub").unwrap_or_default(),
            username,
            roles,
        })
    }

    /// Whether the roles let this person in, and as what: `(staff, superuser)`.
    pub fn roles(&self, identity: &SsoIdentity) -> Option<(bool, bool)> {
        let has = |values: &[String]| identity.roles.iter().any(|r| values.contains(r));
        let c = &self.config;
        if !c.allowed_values.is_empty() && !has(&c.allowed_values) {
            return None;
        }
        let superuser = has(&c.superuser_values);
        Some((superuser || has(&c.staff_values), superuser))
    }

    /// The provider's logout URL (RP-initiated logout), when it has one.
    pub async fn logout_url(&self) -> Option<String> {
        let metadata = self.metadata(false).await.ok()?;
        let endpoint = metadata.additional_metadata().end_session_endpoint.clone()?;
        let back = PostLogoutRedirectUrl::new(self.config.post_logout_url.clone()).ok()?;
        let request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()))
            .set_post_logout_redirect_uri(back);
        Some(request.http_get_url().to_string())
    }
}

type ConfiguredClient = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The claims of an ID token whose signature and claims were verified: its payload, which holds
/// claims the crate's types do not name.
fn payload(token: &CoreIdToken) -> Result<serde_json::Value, SsoError> {
    let malformed = || SsoError::Refused("a malformed ID token".into());
    let compact = token.to_string();
    let payload = compact.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

fn refused(e: openidconnect::ClaimsVerificationError) -> SsoError {
    SsoError::Refused(format!("the identity provider's token was refused: {e}"))
}

/// The crate's HTTP client: reqwest, following no redirect.
#[derive(Debug)]
struct Http(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, reqwest::Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// One request of the crate's, over reqwest.
async fn send(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let mut answer = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(answer.body(body).expect("a response from a valid one"))
}
