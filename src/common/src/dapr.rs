//! A small client for the Dapr sidecar's HTTP API on loopback: its outbound health and
//! service invocation. Calls carry the `dapr-api-token` header when the sidecar requires
//! one (`DAPR_API_TOKEN`).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};

/// The header that carries Dapr API tokens, in both directions.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

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

    /// The sidecar's base URL, e.g. `http://127.0.0.1:3500`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Succeeds when the sidecar reports itself ready for the app's outbound calls.
    pub async fn outbound_health(&self) -> Result<(), SidecarError> {
        let url = format!("{}/v1.0/healthz/outbound", self.base);
        let response = self
            .request(Method::GET, &url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|source| SidecarError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SidecarError::Unhealthy {
                url,
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
