//! `order-processor bootstrap`, run in Azure by a Container Apps job inside the virtual
//! network, signed in as the server's Microsoft Entra administrator (an identity of its
//! own). It creates the PostgreSQL role of the app's managed identity and, in the app's
//! database, a schema that role owns, so the app can run its migrations and nothing more.
//! Locally, `db/bootstrap.sql` does the same for a password role. Safe to run again.

use anyhow::Context;
use common::config::{ConfigError, Vars};
use sqlx::{Connection, Executor, PgConnection};

use crate::config::EntraDatabase;
use crate::entra::EntraSignIn;

/// What the bootstrap job is told.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The server and the app's database, signed in to as the Entra administrator
    /// (`DB_HOST`, `DB_NAME`, `DB_ADMIN_USER`, `AZURE_CLIENT_ID`).
    pub admin: EntraDatabase,
    /// The app identity's role name, its identity's name (`APP_ROLE`).
    pub app_role: String,
    /// The app identity's object (principal) id (`APP_ROLE_OBJECT_ID`).
    pub app_object_id: String,
}

impl BootstrapConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars = Vars::from_env();
        Ok(Self {
            admin: EntraDatabase::from_vars(&vars, "DB_ADMIN_USER")?,
            app_role: vars.required("APP_ROLE")?,
            app_object_id: vars.required("APP_ROLE_OBJECT_ID")?,
        })
    }
}

/// Creates the role (from the `postgres` database, where Azure's `pgaadauth` functions
/// live), then prepares the app's database.
pub async fn run(config: &BootstrapConfig) -> anyhow::Result<()> {
    let sign_in = EntraSignIn::new(&config.admin, "order-processor-bootstrap")?;
    let (options, _) = sign_in.connect_options("postgres").await?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("cannot sign in to the postgres database as the Entra administrator")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(&config.app_role)
            .fetch_one(&mut conn)
            .await?;
    if exists {
        tracing::info!(role = %config.app_role, "the app's role exists");
    } else {
        sqlx::query(
            "SELECT * FROM pgaadauth_create_principal_with_oid($1, $2, 'service', false, false)",
        )
        .bind(&config.app_role)
        .bind(&config.app_object_id)
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot create the role {}", config.app_role))?;
        tracing::info!(role = %config.app_role, "created the app's role for its managed identity");
    }
    conn.close().await?;

    let (options, _) = sign_in.connect_options(&config.admin.name).await?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot sign in to the database {}", config.admin.name))?;
    prepare_database(&mut conn, &config.app_role).await?;
    tracing::info!(role = %config.app_role, database = %config.admin.name, "database prepared");
    Ok(())
}

/// In the current database: `role` may connect, owns the schema `app` and finds its
/// tables there; nobody may create objects in `public`. The statements are built by the
/// server's `format('%I')`, which quotes the identifiers.
pub async fn prepare_database(conn: &mut PgConnection, role: &str) -> anyhow::Result<()> {
    // Creating a schema owned by another role needs membership in it. Azure's Entra
    // administrator is not a superuser, but can grant itself a role it created.
    let membership = statement(conn, "SELECT format('GRANT %I TO CURRENT_USER', $1)", role).await?;
    if let Err(error) = conn.execute(sqlx::AssertSqlSafe(membership)).await {
        tracing::warn!(%error, "cannot grant the app's role to the administrator; continuing");
    }
    let statements = [
        "SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), $1)",
        "SELECT 'REVOKE CREATE ON SCHEMA public FROM PUBLIC' WHERE $1 IS NOT NULL",
        "SELECT format('CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION %I', $1)",
        "SELECT format('ALTER ROLE %I IN DATABASE %I SET search_path = app', $1, current_database())",
    ];
    for builder in statements {
        let sql = statement(conn, builder, role).await?;
        conn.execute(sqlx::AssertSqlSafe(sql.clone()))
            .await
            .with_context(|| format!("bootstrap statement failed: {sql}"))?;
    }
    Ok(())
}

async fn statement(
    conn: &mut PgConnection,
    builder: &'static str,
    role: &str,
) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar(builder)
        .bind(role)
        .fetch_one(conn)
        .await?)
}
