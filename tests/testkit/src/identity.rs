//! A stand-in for the managed identity endpoint Container Apps gives each container: the
//! App Service protocol that the Rust `azure_identity` (order-processor, its bootstrap) and
//! the Go `azidentity` (daprd's PostgreSQL binding, `useAzureAD`) both speak when
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set. A token request is
//! `GET <IDENTITY_ENDPOINT>?api-version=2019-08-01&resource=<scope without /.default>&client_id=<id>`
//! with the header `X-IDENTITY-HEADER: <IDENTITY_HEADER>`; the answer is JSON with
//! `access_token`, `expires_on` (epoch seconds, as a string), `resource` and `token_type`
//! (`azure_identity` requires all four; `azidentity` reads `access_token` and `expires_on`).
//!
//! It issues tokens for PostgreSQL only (the resource `https://ossrdbms-aad.database.windows.net`),
//! only to a caller that sends the header it was given, and only for the identities
//! assigned to that caller; anything else is refused as the real endpoint refuses it (400
//! for an identity that is not assigned, 401 without the right header). Each identity has
//! one current token, served until half its lifetime has passed; the next request then gets
//! a new one. Entra ID does the rest in Azure: here the token becomes the password of the
//! identity's PostgreSQL role, valid until the token expires (`VALID UNTIL`), as soon as the
//! role exists (the server's principal function reads it; see `azure.rs`). A role has one
//! password, so a token stops working when the next one is issued, while Entra would take
//! it until it expires. Every request is recorded, with its answer.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// The resource (audience) of Azure Database for PostgreSQL tokens: the scope without
/// `/.default`.
pub const RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
/// The App Service protocol's version.
pub const API_VERSION: &str = "2019-08-01";
/// The header that carries `IDENTITY_HEADER`.
const SECRET_HEADER: &str = "x-identity-header";
/// The endpoint's path.
const PATH: &str = "/msi/token";

/// A user-assigned managed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its name, which is also its PostgreSQL role's name.
    pub name: String,
    /// Its client id (`AZURE_CLIENT_ID`, the binding's `azureClientId`).
    pub client_id: String,
    /// Its object (principal) id, which the bootstrap gives the principal function.
    pub object_id: String,
}

/// A token the endpoint issued.
#[derive(Debug, Clone)]
pub struct Token {
    /// The access token, the password its role takes.
    pub token: String,
    /// The identity's name.
    pub identity: String,
    /// 1 for the identity's first token, then 2, ...
    pub generation: u64,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires (whole seconds, as `expires_on` says).
    pub expires_at: SystemTime,
}

/// A request to the endpoint, as it came and as it was answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// When it arrived.
    pub at: SystemTime,
    /// How long the answer took (a new token includes setting its role's password).
    pub took: Duration,
    /// The caller whose header it carried; `None` when the header was missing or unknown.
    pub caller: Option<String>,
    /// The `client_id` asked for.
    pub client_id: Option<String>,
    /// The `resource` asked for.
    pub resource: Option<String>,
    /// The `api-version` sent.
    pub api_version: Option<String>,
    /// What it got.
    pub answer: Answer,
}

/// The answer to a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A token of this identity, of this generation.
    Token {
        /// The identity's name.
        identity: String,
        /// The token's generation.
        generation: u64,
    },
    /// A refusal with this status and reason.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Why.
        reason: String,
    },
}

struct Caller {
    name: String,
    identities: Vec<String>,
}

struct Inner {
    identities: Vec<Identity>,
    lifetime: Duration,
    callers: Mutex<HashMap<String, Caller>>,
    tokens: Mutex<HashMap<String, Vec<Token>>>,
    requests: Mutex<Vec<TokenRequest>>,
    /// Held while a token is issued, so that two requests never both rotate one.
    issuing: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Inner>,
    pool: PgPool,
}

/// The running endpoint, on a free loopback port, with a thread and runtime of its own (it
/// answers whatever the test's runtime does). Stopped when dropped.
pub struct IdentityEndpoint {
    inner: Arc<Inner>,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdentityEndpoint {
    /// Starts the endpoint for `identities`, whose tokens last `lifetime` (whole seconds, at
    /// least 2). `superuser` reaches the server whose roles take the tokens: prepared by
    /// [`crate::azure::AzureLikeServer::start_entra`].
    pub fn start(
        superuser: PgConnectOptions,
        identities: Vec<Identity>,
        lifetime: Duration,
    ) -> Self {
        assert!(
            lifetime >= Duration::from_secs(2) && lifetime.subsec_nanos() == 0,
            "token lifetimes are whole seconds, at least 2"
        );
        let inner = Arc::new(Inner {
            identities,
            lifetime,
            callers: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            issuing: tokio::sync::Mutex::new(()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the identity endpoint");
        listener.set_nonblocking(true).expect("non-blocking");
        let url = format!(
            "http://127.0.0.1:{}{PATH}",
            listener.local_addr().expect("address").port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared_inner = Arc::clone(&inner);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the identity endpoint's runtime");
            runtime.block_on(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy_with(superuser);
                let app = Router::new().route(PATH, get(token)).with_state(Shared {
                    inner: shared_inner,
                    pool,
                });
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("the endpoint's listener");
                tokio::select! {
                    _ = stopped => {}
                    result = axum::serve(listener, app).into_future() => {
                        result.expect("the identity endpoint");
                    }
                }
            });
        });
        Self {
            inner,
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Assigns `identities` to a new caller named `name` (a container: an app, its
    /// sidecar, the bootstrap job) and returns the environment Container Apps would give
    /// it: `IDENTITY_ENDPOINT` and an `IDENTITY_HEADER` of its own, by which its requests
    /// are known.
    pub fn caller(&self, name: &str, identities: &[&Identity]) -> Vec<(String, String)> {
        let secret = crate::stack::random_token();
        self.inner.callers.lock().unwrap().insert(
            secret.clone(),
            Caller {
                name: name.to_owned(),
                identities: identities.iter().map(|i| i.client_id.clone()).collect(),
            },
        );
        vec![
            ("IDENTITY_ENDPOINT".to_owned(), self.url.clone()),
            ("IDENTITY_HEADER".to_owned(), secret),
        ]
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Every token issued for `identity` so far, the current one last.
    pub fn tokens(&self, identity: &Identity) -> Vec<Token> {
        self.inner
            .tokens
            .lock()
            .unwrap()
            .get(&identity.client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How long its tokens last.
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }
}

impl Drop for IdentityEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let at = SystemTime::now();
    let started = Instant::now();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let caller = headers
        .get(SECRET_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|secret| {
            let callers = shared.inner.callers.lock().unwrap();
            callers
                .get(secret)
                .map(|c| (c.name.clone(), c.identities.clone()))
        });
    let answer = answer(&shared, caller.as_ref(), &query).await;
    let recorded = match &answer {
        Ok(token) => Answer::Token {
            identity: token.identity.clone(),
            generation: token.generation,
        },
        Err((status, reason)) => Answer::Refused {
            status: status.as_u16(),
            reason: reason.clone(),
        },
    };
    shared.inner.requests.lock().unwrap().push(TokenRequest {
        at,
        took: started.elapsed(),
        caller: caller.map(|(name, _)| name),
        client_id: query.get("client_id").cloned(),
        resource: query.get("resource").cloned(),
        api_version: query.get("api-version").cloned(),
        answer: recorded,
    });
    match answer {
        Ok(token) => {
            let client_id = query.get("client_id").cloned().unwrap_or_default();
            axum::Json(json!({
                "access_token": token.token,
                "expires_on": epoch_seconds(token.expires_at).to_string(),
                "resource": RESOURCE,
                "token_type": "Bearer",
                "client_id": client_id,
            }))
            .into_response()
        }
        Err((status, reason)) => (
            status,
            axum::Json(json!({ "statusCode": status.as_u16(), "message": reason })),
        )
            .into_response(),
    }
}

/// The token for a request, or why it is refused.
async fn answer(
    shared: &Shared,
    caller: Option<&(String, Vec<String>)>,
    query: &HashMap<String, String>,
) -> Result<Token, (StatusCode, String)> {
    let refuse = |status: StatusCode, reason: &str| Err((status, reason.to_owned()));
    let Some((_, assigned)) = caller else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the X-IDENTITY-HEADER header is missing or not this container's",
        );
    };
    if query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return refuse(StatusCode::BAD_REQUEST, "api-version must be 2019-08-01");
    }
    if query.get("resource").map(String::as_str) != Some(RESOURCE) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this endpoint issues tokens for Azure Database for PostgreSQL only",
        );
    }
    let Some(client_id) = query.get("client_id") else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "no client_id: this container has no system-assigned identity",
        );
    };
    let identity = shared
        .inner
        .identities
        .iter()
        .find(|i| &i.client_id == client_id && assigned.contains(client_id));
    let Some(identity) = identity else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity: the identity is not assigned to this container",
        );
    };
    issue(shared, identity)
        .await
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}")))
}

/// The identity's current token, or a new one (and its role's password) once half of the
/// current one's lifetime has passed.
async fn issue(shared: &Shared, identity: &Identity) -> anyhow::Result<Token> {
    let _issuing = shared.inner.issuing.lock().await;
    let lifetime = shared.inner.lifetime;
    let now = SystemTime::now();
    let current = shared
        .inner
        .tokens
        .lock()
        .unwrap()
        .get(&identity.client_id)
        .and_then(|tokens| tokens.last().cloned());
    if let Some(current) = &current
        && now < current.issued_at + lifetime / 2
    {
        return Ok(current.clone());
    }
    let generation = current.map_or(1, |t| t.generation + 1);
    let expires = epoch_seconds(now) + lifetime.as_secs();
    let token = Token {
        token: jwt_like(identity, generation, epoch_seconds(now), expires),
        identity: identity.name.clone(),
        generation,
        issued_at: now,
        expires_at: UNIX_EPOCH + Duration::from_secs(expires),
    };
    set_password(&shared.pool, identity, &token.token, expires).await?;
    shared
        .inner
        .tokens
        .lock()
        .unwrap()
        .entry(identity.client_id.clone())
        .or_default()
        .push(token.clone());
    Ok(token)
}

/// Makes `token` the password of the identity's role until `expires`, if the role exists;
/// records it for the principal function either way (which gives a role it creates the
/// current token). One transaction, which waits for a principal function creating the
/// role at the same moment.
async fn set_password(
    pool: &PgPool,
    identity: &Identity,
    token: &str,
    expires: u64,
) -> anyhow::Result<()> {
    let expires = i64::try_from(expires)?;
    let mut tx = pool.begin().await?;
    let role: Option<String> = sqlx::query_scalar(
        "INSERT INTO entra_stand_in.principals (object_id, token, expires)
         VALUES ($1, $2, to_timestamp($3))
         ON CONFLICT (object_id) DO UPDATE SET token = excluded.token, expires = excluded.expires
         RETURNING role",
    )
    .bind(&identity.object_id)
    .bind(token)
    .bind(expires)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(role) = role {
        let alter: Option<String> = sqlx::query_scalar(
            "SELECT format('ALTER ROLE %I PASSWORD %L VALID UNTIL %L', rolname, $2::text, to_timestamp($3)::text)
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(&role)
        .bind(token)
        .bind(expires)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(alter) = alter {
            sqlx::Executor::execute(&mut *tx, sqlx::AssertSqlSafe(alter)).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A token shaped like Entra ID's (a JWT: header, claims, signature, base64url), about as
/// long, and unique; nobody checks the signature, which is random.
fn jwt_like(identity: &Identity, generation: u64, issued: u64, expires: u64) -> String {
    let header = json!({ "typ": "JWT", "alg": "RS256" });
    let claims = json!({
        "aud": RESOURCE,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "appid": identity.client_id,
        "oid": identity.object_id,
        "sub": identity.object_id,
        "idtyp": "app",
        "uti": format!("{}-{generation}", identity.name),
    });
    let mut signature = Vec::with_capacity(256);
    while signature.len() < 256 {
        signature.extend_from_slice(crate::stack::random_token().as_bytes());
    }
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(&signature[..256])
    )
}

fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
