//! `order-processor bootstrap` under Azure's privilege model, on the PostgreSQL major
//! version infra/ deploys: run as a non-superuser Entra administrator against a server
//! whose `pgaadauth_create_principal_with_oid` is SECURITY DEFINER and against one where it
//! is SECURITY INVOKER (Azure does not say which). After it, the app signs in as its role,
//! migrates (creating its own schema), writes with the binding's statement and reads; it can
//! do nothing more. Running it again, or twice at once, changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use order_processor::binding::INSERT_SQL;
use order_processor::bootstrap::{self, AdminLogin, BootstrapConfig, Changes};
use order_processor::db;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use testkit::azure::{ADMIN, AzureLikeServer, PrincipalFunction};

const ROLE: &str = "id-orders-data";
const OBJECT_ID: &str = "6f1d2c3b-4a59-4e7d-9c8b-1a2b3c4d5e6f";
const DATABASE: &str = "orders";

fn config(server: &AzureLikeServer) -> BootstrapConfig {
    BootstrapConfig {
        admin: AdminLogin::Url(server.admin_url("postgres").into()),
        database: DATABASE.to_owned(),
        app_role: ROLE.to_owned(),
        app_object_id: OBJECT_ID.to_owned(),
        patience: Duration::ZERO,
    }
}

/// The app's pool, connected as order-processor connects (its schema as `search_path`).
async fn app_pool(server: &AzureLikeServer) -> PgPool {
    let options: PgConnectOptions = server
        .principal_url(ROLE, OBJECT_ID, DATABASE)
        .parse()
        .unwrap();
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db::in_app_schema(options))
        .await
        .unwrap()
}

async fn superuser(server: &AzureLikeServer, database: &str) -> PgConnection {
    PgConnection::connect(&server.superuser_url(database))
        .await
        .unwrap()
}

/// The server's major version, and the one infra/main.bicep deploys by default.
fn infra_major() -> String {
    let bicep =
        std::fs::read_to_string(testkit::workspace_root().join("infra/main.bicep")).unwrap();
    let line = bicep
        .lines()
        .find(|l| l.starts_with("param postgresVersion string = "))
        .expect("postgresVersion in infra/main.bicep");
    line.rsplit('=')
        .next()
        .unwrap()
        .trim()
        .trim_matches('\'')
        .to_owned()
}

#[tokio::test]
async fn the_test_server_runs_the_postgresql_major_version_infra_deploys() {
    let server = AzureLikeServer::start(PrincipalFunction::SecurityDefiner).await;
    let mut conn = superuser(&server, "postgres").await;
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        version[..version.len() - 4],
        infra_major(),
        "server {version}"
    );
}

#[tokio::test]
async fn after_the_bootstrap_the_app_migrates_writes_and_reads_and_can_do_nothing_more() {
    for mode in PrincipalFunction::BOTH {
        let server = AzureLikeServer::start(mode).await;
        let changes = bootstrap::run(&config(&server)).await.unwrap();
        assert_eq!(
            changes,
            Changes {
                created_role: true,
                created_database: true
            },
            "{mode:?}"
        );

        let pool = app_pool(&server).await;
        db::migrate(&pool, Duration::ZERO).await.unwrap();
        let inserted = sqlx::query(INSERT_SQL)
            .bind("{1}")
            .bind(r#"{"Ada"}"#)
            .bind("{12.50}")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(inserted.rows_affected(), 1, "{mode:?}");
        let order = db::get_order(&pool, 1).await.unwrap().unwrap();
        assert_eq!(order.customer(), "Ada");

        let mut admin = superuser(&server, DATABASE).await;
        let (schema_owner, table_owner): (String, String) = sqlx::query_as(
            "SELECT n.nspowner::regrole::text, t.tableowner::text FROM pg_namespace n
             JOIN pg_tables t ON t.schemaname = n.nspname
             WHERE n.nspname = 'app' AND t.tablename = 'orders'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            (schema_owner.as_str(), table_owner.as_str()),
            ("\"id-orders-data\"", ROLE)
        );
        let database_owner: String = sqlx::query_scalar(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'orders'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            database_owner, ADMIN,
            "the administrator owns the database it created"
        );

        for (statement, why) in [
            (
                "CREATE TABLE public.intruder (id int)",
                "no CREATE on public",
            ),
            ("CREATE DATABASE another", "no CREATEDB"),
            ("CREATE ROLE another", "no CREATEROLE"),
            (
                "SET ROLE \"id-pg-admin\"",
                "no membership in the administrator",
            ),
        ] {
            let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
            assert!(
                error.to_string().contains("permission denied"),
                "{mode:?}: {why}: {error}"
            );
        }
        pool.close().await;
    }
}

/// Roles, memberships, databases and their privileges: what a bootstrap may change.
async fn catalog(server: &AzureLikeServer) -> BTreeMap<String, String> {
    let mut conn = superuser(server, "postgres").await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'role ' || rolname, concat_ws(',', rolsuper, rolcreaterole, rolcreatedb, rolcanlogin)
         FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'
         UNION ALL
         SELECT 'member ' || m.member::regrole || ' of ' || m.roleid::regrole,
                concat_ws(',', m.admin_option, m.inherit_option, m.set_option)
         FROM pg_auth_members m
         UNION ALL
         SELECT 'database ' || datname, concat_ws(' ', pg_get_userbyid(datdba), datacl::text)
         FROM pg_database",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn a_second_bootstrap_changes_nothing() {
    for mode in PrincipalFunction::BOTH {
        let server = AzureLikeServer::start(mode).await;
        bootstrap::run(&config(&server)).await.unwrap();
        let before = catalog(&server).await;
        let again = bootstrap::run(&config(&server)).await.unwrap();
        assert_eq!(again, Changes::default(), "{mode:?}");
        assert_eq!(catalog(&server).await, before, "{mode:?}");
    }
}

#[tokio::test]
async fn two_bootstraps_at_once_create_the_role_and_the_database_once() {
    for mode in PrincipalFunction::BOTH {
        let server = AzureLikeServer::start(mode).await;
        let config = config(&server);
        let (first, second) = tokio::join!(bootstrap::run(&config), bootstrap::run(&config));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            [first.created_role, second.created_role]
                .iter()
                .filter(|c| **c)
                .count(),
            1,
            "{mode:?}: {first:?} {second:?}"
        );
        assert_eq!(
            [first.created_database, second.created_database]
                .iter()
                .filter(|c| **c)
                .count(),
            1,
            "{mode:?}: {first:?} {second:?}"
        );
        let pool = app_pool(&server).await;
        db::migrate(&pool, Duration::ZERO).await.unwrap();
        pool.close().await;
    }
}

#[tokio::test]
async fn a_database_the_administrator_cannot_grant_on_is_refused_before_anything_changes() {
    let server = AzureLikeServer::start(PrincipalFunction::SecurityDefiner).await;
    // As when a database is created through ARM before the Entra administrator exists:
    // owned by Azure's superuser.
    sqlx::query("CREATE DATABASE orders")
        .execute(&mut superuser(&server, "postgres").await)
        .await
        .unwrap();
    let before = catalog(&server).await;

    let error = bootstrap::run(&config(&server)).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("which postgres owns"), "{message}");
    assert!(message.contains("Drop that database"), "{message}");
    assert_eq!(
        catalog(&server).await,
        before,
        "nothing was created or granted"
    );
}

#[tokio::test]
async fn an_existing_role_with_administrative_rights_is_refused() {
    let server = AzureLikeServer::start(PrincipalFunction::SecurityInvoker).await;
    sqlx::query("CREATE ROLE \"id-orders-data\" LOGIN CREATEDB")
        .execute(&mut superuser(&server, "postgres").await)
        .await
        .unwrap();
    let error = bootstrap::run(&config(&server)).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("exists with administrative rights"),
        "{error:#}"
    );
}

/// The emulation is only worth something if it reproduces what breaks in Azure: with a
/// SECURITY DEFINER principal function the administrator has no right over the new role,
/// so `GRANT role TO CURRENT_USER` (what this project's bootstrap did before) fails.
#[tokio::test]
async fn the_emulated_administrator_has_no_rights_over_a_role_a_definer_function_created() {
    for mode in PrincipalFunction::BOTH {
        let server = AzureLikeServer::start(mode).await;
        let mut admin = PgConnection::connect(&server.admin_url("postgres"))
            .await
            .unwrap();
        sqlx::query("SELECT pgaadauth_create_principal_with_oid($1, $2, 'service', false, false)")
            .bind(ROLE)
            .bind(OBJECT_ID)
            .execute(&mut admin)
            .await
            .unwrap();
        let is_superuser: bool =
            sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert!(!is_superuser);

        let granted = sqlx::query("GRANT \"id-orders-data\" TO CURRENT_USER")
            .execute(&mut admin)
            .await;
        match mode {
            PrincipalFunction::SecurityDefiner => {
                let error = granted.unwrap_err().to_string();
                assert!(error.contains("permission denied"), "{error}");
            }
            PrincipalFunction::SecurityInvoker => {
                granted.unwrap();
            }
        }
    }
}
