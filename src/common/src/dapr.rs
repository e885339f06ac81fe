//! A small client for the Dapr sidecar's HTTP API on loopback: its outbound health, the
//! components it has loaded, its shutdown, and service invocation. Calls carry the `dapr-api-token` header when the sidecar requires
//! one (`DAPR_API_TOKEN`); [`AppApiToken`] checks the token the sidecar sends the app.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};

/// The header that carries Dapr API tokens, in both directions.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// daprd's request body limit (`--max-body-size`, 4 MiB by default; also the limit of its
/// gRPC API), which order-processor applies to its own requests too.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long a health check may take before the sidecar counts as unavailable.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the sidecar is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The sidecar could not be reached.
    #[error("Dapr sidecar at {url} is unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The sidecar answered, but not healthy.
    #[error("Dapr sidecar at {url} answered {status}")]
    Unhealthy {
        /// The URL called.
        url: String,
        /// What it answered.
        status: StatusCode,
    },
}

/// The app's own Dapr sidecar, reached over HTTP on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Sidecar {
    base: String,
    http: reqwest::Client,
    api_token: Option<SecretString>,
}

impl Sidecar {
    /// A client for the sidecar listening on `http_port`; each call may take `timeout`.
    pub fn new(
        http_port: u16,
        api_token: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            base: format!("http://127.0.0.1:{http_port}"),
            http,
            api_token,
        })
    }

    /// Succeeds when the sidecar reports itself ready for the app's outbound calls.
    pub async fn outbound_health(&self) -> Result<(), SidecarError> {
        let url = format!("{}/v1.0/healthz/outbound", self.base);
        self.call(Method::GET, &url).await.map(drop)
    }

    /// Whether the sidecar has loaded the component `name` (its metadata API). A component
    /// that failed to initialise with `ignoreErrors` set is not loaded.
    pub async fn has_component(&self, name: &str) -> Result<bool, SidecarError> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            #[serde(default)]
            components: Vec<Component>,
        }
        #[derive(serde::Deserialize)]
        struct Component {
            name: String,
        }
        let url = format!("{}/v1.0/metadata", self.base);
        let response = self.call(Method::GET, &url).await?;
        let metadata: Metadata =
            response
                .json()
                .await
                .map_err(|source| SidecarError::Unreachable {
                    url: url.clone(),
                    source,
                })?;
        Ok(metadata.components.iter().any(|c| c.name == name))
    }

    /// Asks the sidecar to shut down (its shutdown API). Whatever supervises it (Container
    /// Apps, `scripts/run.sh`, the tests) starts it again.
    pub async fn shutdown(&self) -> Result<(), SidecarError> {
        let url = format!("{}/v1.0/shutdown", self.base);
        self.call(Method::POST, &url).await.map(drop)
    }

    /// Sends a request and requires a 2xx answer.
    async fn call(&self, method: Method, url: &str) -> Result<reqwest::Response, SidecarError> {
        let response = self
            .request(method, url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|source| SidecarError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(SidecarError::Unhealthy {
                url: url.to_owned(),
                status: response.status(),
            })
        }
    }

    /// A `POST` to `method` of the app `app_id` through Dapr service invocation.
    pub fn invoke(&self, app_id: &str, method: &str) -> RequestBuilder {
        let url = format!("{}/v1.0/invoke/{app_id}/method/{method}", self.base);
        self.request(Method::POST, &url)
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.api_token {
            Some(token) => builder.header(API_TOKEN_HEADER, token.expose_secret()),
            None => builder,
        }
    }
}

/// Requires the sidecar's `dapr-api-token` on every route it guards, when the app has
/// one (`APP_API_TOKEN`, which Container Apps sets for Dapr-enabled apps). Compared in
/// constant time; a missing or wrong token is answered 401 with the usual error shape.
#[derive(Clone, Debug)]
pub struct AppApiToken(Option<SecretString>);

impl AppApiToken {
    /// Guards with `token`; `None` lets every request through.
    pub fn new(token: Option<SecretString>) -> Self {
        Self(token)
    }

    /// Whether `presented` (the request's header value) is acceptable.
    pub fn accepts(&self, presented: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        match (&self.0, presented) {
            (None, _) => true,
            (Some(expected), Some(given)) => {
                expected.expose_secret().as_bytes().ct_eq(given).into()
            }
            (Some(_), None) => false,
        }
    }

    /// Axum middleware: `axum::middleware::from_fn_with_state(token, AppApiToken::check)`.
    pub async fn check(
        axum::extract::State(token): axum::extract::State<Self>,
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let presented = request
            .headers()
            .get(API_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        if token.accepts(presented) {
            return next.run(request).await;
        }
        tracing::warn!(path = %request.uri().path(), "request without the sidecar's API token refused");
        crate::wire::ErrorBody::new(
            "unauthorized",
            "this route takes calls from the Dapr sidecar only (dapr-api-token)",
        )
        .into_response(StatusCode::UNAUTHORIZED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_every_request_is_accepted() {
        assert!(AppApiToken::new(None).accepts(None));
    }

    #[test]
    fn with_a_token_only_the_same_token_is_accepted() {
        let guard = AppApiToken::new(Some(SecretString::from("s3cret")));
        assert!(guard.accepts(Some(b"s3cret")));
        assert!(!guard.accepts(Some(b"s3cre")));
        assert!(!guard.accepts(Some(b"s3cret!")));
        assert!(!guard.accepts(None));
    }
}
