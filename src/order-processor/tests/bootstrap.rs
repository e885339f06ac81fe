//! The Azure bootstrap job's database preparation, against a real PostgreSQL: a role
//! created the way Azure's `pgaadauth_create_principal_with_oid` creates one (a plain
//! login role) ends up able to migrate and use its own schema, and nothing more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use order_processor::{bootstrap, db};
use sqlx::{Connection, Executor, PgConnection};
use testkit::pg::TestDb;

#[tokio::test]
async fn bootstrap_prepares_a_database_the_app_role_can_migrate_and_nothing_more() {
    let db = TestDb::create_bare().await;
    let role = format!("bootstrap_{}", db.name);
    let mut admin = PgConnection::connect(&db.admin_url()).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'secret'"
        )))
        .await
        .unwrap();

    bootstrap::prepare_database(&mut admin, &role)
        .await
        .unwrap();
    // Running it again changes nothing and does not fail.
    bootstrap::prepare_database(&mut admin, &role)
        .await
        .unwrap();

    let pool = sqlx::PgPool::connect(&db.url_as(&role, "secret"))
        .await
        .unwrap();
    db::migrate(&pool, Duration::ZERO).await.unwrap();
    let (schema, owner): (String, String) = sqlx::query_as(
        "SELECT schemaname::text, tableowner::text FROM pg_tables WHERE tablename = 'orders'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((schema.as_str(), owner.as_str()), ("app", role.as_str()));

    let denied = sqlx::query("CREATE TABLE public.intruder (id int)")
        .execute(&pool)
        .await;
    assert!(
        denied
            .unwrap_err()
            .to_string()
            .contains("permission denied")
    );
    let denied = sqlx::query("CREATE DATABASE another").execute(&pool).await;
    assert!(
        denied
            .unwrap_err()
            .to_string()
            .contains("permission denied")
    );

    pool.close().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP OWNED BY {role}; DROP ROLE {role}"
        )))
        .await
        .ok();
}
