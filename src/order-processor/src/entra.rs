//! Signing in to Azure Database for PostgreSQL with Microsoft Entra ID: the managed
//! identity's access token is the password. Tokens are checked only when a connection
//! logs in, so a background task puts a fresh one into the pool's connect options well
//! before the current one expires; connections already open are not affected.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use azure_core::credentials::{AccessToken, TokenCredential};
use azure_core::time::OffsetDateTime;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::EntraDatabase;

/// The scope of Azure Database for PostgreSQL tokens.
pub const SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";

/// Renew this long before the token expires.
const RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);

/// A managed identity that signs in to one PostgreSQL server.
#[derive(Debug, Clone)]
pub struct EntraSignIn {
    credential: Arc<ManagedIdentityCredential>,
    base: PgConnectOptions,
}

impl EntraSignIn {
    /// Prepares the sign-in; no token is requested yet.
    pub fn new(database: &EntraDatabase, application: &str) -> anyhow::Result<Self> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: database.client_id.clone().map(UserAssignedId::ClientId),
            ..Default::default()
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .context("cannot use the managed identity")?;
        // TLS with the server's certificate verified: Azure requires TLS anyway.
        let base = PgConnectOptions::new_without_pgpass()
            .host(&database.host)
            .port(database.port)
            .database(&database.name)
            .username(&database.user)
            .ssl_mode(PgSslMode::VerifyFull)
            .application_name(application);
        Ok(Self { credential, base })
    }

    /// Changes the connect options every sign-in starts from (e.g. the `search_path`).
    #[must_use]
    pub fn adjust(mut self, change: impl FnOnce(PgConnectOptions) -> PgConnectOptions) -> Self {
        self.base = change(self.base);
        self
    }

    /// Connect options for `database` holding a current token.
    pub async fn connect_options(
        &self,
        database: &str,
    ) -> anyhow::Result<(PgConnectOptions, OffsetDateTime)> {
        let token = self.token().await?;
        let options = self
            .base
            .clone()
            .database(database)
            .password(token.token.secret());
        Ok((options, token.expires_on))
    }

    async fn token(&self) -> anyhow::Result<AccessToken> {
        (|| self.credential.get_token(&[SCOPE], None))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(6)
                    .with_jitter(),
            )
            .notify(|error, delay| {
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), "cannot get a Microsoft Entra token yet");
            })
            .await
            .context("cannot get a Microsoft Entra token for PostgreSQL from the managed identity")
    }

    /// Keeps `pool` supplied with fresh tokens, for as long as the process runs.
    pub fn keep_fresh(self, pool: PgPool, database: String, mut expires_on: OffsetDateTime) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_in(expires_on, OffsetDateTime::now_utc())).await;
                match self.connect_options(&database).await {
                    Ok((options, expiry)) => {
                        pool.set_connect_options(options);
                        expires_on = expiry;
                        tracing::info!(expires_on = %expiry, "database token renewed");
                    }
                    Err(error) => {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot renew the database token; retrying in a minute"
                        );
                        expires_on =
                            OffsetDateTime::now_utc() + RENEW_BEFORE + Duration::from_secs(60);
                    }
                }
            }
        });
    }
}

/// How long to wait before renewing a token that expires at `expires_on`: until
/// [`RENEW_BEFORE`] ahead of it, at least 10 s and at most an hour.
fn renew_in(expires_on: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let left = Duration::try_from(expires_on - now).unwrap_or_default();
    left.saturating_sub(RENEW_BEFORE)
        .clamp(Duration::from_secs(10), Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_ten_minutes_before_they_expire() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            renew_in(now + Duration::from_secs(30 * 60), now),
            Duration::from_secs(20 * 60)
        );
    }

    #[test]
    fn renewal_waits_at_least_ten_seconds_and_at_most_an_hour() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            renew_in(now + Duration::from_secs(60), now),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_in(now - Duration::from_secs(60), now),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_in(now + Duration::from_secs(24 * 3600), now),
            Duration::from_secs(3600)
        );
    }
}
