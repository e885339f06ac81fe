//! Faults through the real stack (PostgreSQL, two daprd, both services as processes):
//! the database, a sidecar or a service goes away in the middle of a run. After the next
//! ticks every order is stored exactly once, checked row by row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::pg::{PrivateServer, TestDb};
use testkit::stack::{Stack, StackOptions, expected_rows, orders_json};

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs are triggered by the test, never by a tick.
fn on_demand(orders: String, chunk_size: usize) -> StackOptions {
    StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders, chunk_size)
    }
}

/// The owner of the orders table: order-processor's role, which its migrations made it.
async fn app_role(stack: &Stack) -> String {
    sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'app' AND tablename = 'orders'",
    )
    .fetch_one(&mut stack.admin().await)
    .await
    .unwrap()
}

/// The database refuses the statement for good (`break_it`); batch sets the chunk aside
/// naming the SQLSTATE, sends it once, waits out its pause; once `fix_it` runs, every
/// order is stored.
async fn a_permanent_refusal_is_set_aside_and_stored_once_fixed(
    break_it: &str,
    fix_it: &str,
    sqlstate: &str,
) {
    let total = 50;
    let stack = Stack::start(on_demand(orders_json(1, total), 100)).await;
    let role = app_role(&stack).await;
    let admin = |sql: &str| sql.replace("{role}", &role);
    sqlx::raw_sql(sqlx::AssertSqlSafe(admin(break_it)))
        .execute(&mut stack.admin().await)
        .await
        .unwrap();

    let first = stack.run_now().await;
    assert_eq!(
        (first["unsendable"].as_u64(), first["deferred"].as_u64()),
        (Some(50), Some(0)),
        "{first}"
    );
    let unsent = &first["unsendable_chunks"][0];
    let reason = unsent["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("SQLSTATE {sqlstate}")), "{unsent}");
    assert!(
        unsent["what_to_change"]
            .as_str()
            .unwrap()
            .contains("privileges"),
        "{unsent}"
    );
    let refusals = || {
        stack
            .log("order-processor")
            .matches("it is not retried")
            .count()
    };
    assert_eq!(refusals(), 1, "batch sent the refused chunk again");
    let waiting = stack.run_now().await;
    assert_eq!(
        (
            waiting["submitted"].as_u64(),
            waiting["unsendable"].as_u64()
        ),
        (Some(0), Some(50)),
        "{waiting}"
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(admin(fix_it)))
        .execute(&mut stack.admin().await)
        .await
        .unwrap();
    stack
        .wait_until("its pause over, every order stored", PATIENCE, || async {
            stack.run_now().await;
            stack.stored().await.len() == total as usize
        })
        .await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
    assert_eq!(refusals(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_privilege_is_refused_for_good_named_and_not_retried() {
    a_permanent_refusal_is_set_aside_and_stored_once_fixed(
        "REVOKE INSERT ON app.orders FROM \"{role}\"",
        "GRANT INSERT ON app.orders TO \"{role}\"",
        "42501",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_refused_for_good_named_and_not_retried() {
    a_permanent_refusal_is_set_aside_and_stored_once_fixed(
        "ALTER TABLE app.orders RENAME TO orders_away",
        "ALTER TABLE app.orders_away RENAME TO orders",
        "42P01",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_database_gets_no_chunk_twice_and_every_order_is_counted_once() {
    let total = 300;
    let mut options = on_demand(orders_json(1, total), 100);
    options
        .batch_env
        .push(("CHUNKS_IN_FLIGHT".to_owned(), "1".to_owned()));
    let stack = Stack::start(options).await;
    let held = stack.hold_writes().await;
    let run = stack.start_run();
    stack.wait_for_waiting_writes(1).await;
    // Stalled until the sidecar's policy has given up on the first try (5 s) and made its
    // next: every attempt at the chunk is alone, never one beside another still writing.
    let mut attempts = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while attempts.len() < 2 {
        let waiting = stack.waiting_writes().await;
        assert!(
            waiting.len() <= 1,
            "a chunk was sent again while it was being written: {waiting:?}"
        );
        attempts.extend(waiting);
        assert!(
            std::time::Instant::now() < deadline,
            "no second attempt: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.release().await;
    let summary = run.await.unwrap().expect("the run's summary");
    assert_eq!(summary["outcome"], "completed", "{summary}");
    assert_eq!(
        (
            summary["inserted"].as_u64(),
            summary["already_present"].as_u64()
        ),
        (Some(300), Some(0))
    );
    assert_eq!(stack.stored().await, expected_rows(1, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_during_a_run_and_started_again_loses_and_duplicates_nothing() {
    let total = 600;
    let server = PrivateServer::start().await;
    let db = TestDb::create_on(&server.admin_url()).await;
    let options = StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders_json(1, total), 20)
    };
    let stack = Stack::start_on(options, db).await;
    // Writes are held, so the run is surely under way when the database goes.
    let held = stack.hold_writes().await;
    let run = stack.start_run();
    stack.wait_for_waiting_writes(1).await;
    server.stop().await;
    drop(held);
    let first = run.await.unwrap().expect("the run's summary");
    server.start_again().await;

    stack.run_until_stored(total as usize).await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
    assert!(first["deferred"].as_u64() > Some(0), "{first}");
}

#[tokio::test(flavor = "multi_thread")]
async fn order_processor_sidecar_restarted_during_a_run_loses_and_duplicates_nothing() {
    let total = 600;
    let options = StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders_json(1, total), 20)
    };
    let mut stack = Stack::start(options).await;
    let held = stack.hold_writes().await;
    let run = stack.start_run();
    stack.wait_for_waiting_writes(1).await;
    stack.kill("order-processor-daprd");
    held.release().await;
    let first = run.await.unwrap().expect("the run's summary");
    assert!(first["deferred"].as_u64() > Some(0), "{first}");
    stack.start_sidecar("order-processor");
    stack.wait_ready("order-processor").await;

    stack.run_until_stored(total as usize).await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_started_while_postgres_is_down_is_restarted_once_it_is_back() {
    // The binding signs in when its sidecar starts (daprd 1.15+, 1.16 included). With
    // ignoreErrors (components/sqldb.yaml) the sidecar starts without it instead of
    // exiting; order-processor is not ready, and once its own login works again it has the
    // sidecar restarted: one supervised restart, as Container Apps restarts a container.
    let server = PrivateServer::start().await;
    let db = TestDb::create_on(&server.admin_url()).await;
    let mut stack = Stack::start_on(StackOptions::every_second(orders_json(1, 50), 10), db).await;
    stack
        .wait_until("50 orders", PATIENCE, || async {
            stack.stored().await.len() == 50
        })
        .await;

    server.stop().await;
    stack.kill("order-processor-daprd");
    stack.start_sidecar("order-processor");
    stack
        .wait_until(
            "the sidecar to start without its binding",
            PATIENCE,
            || async {
                stack
                    .log("order-processor-daprd")
                    .contains("Ignoring error processing component")
            },
        )
        .await;
    let (status, body) = stack.readiness("order-processor").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["binding"], "unavailable", "{body}");
    assert_eq!(
        stack.sidecar_restarts("order-processor"),
        0,
        "not while PostgreSQL is down"
    );

    server.start_again().await;
    stack.wait_ready("order-processor").await;
    assert_eq!(stack.sidecar_restarts("order-processor"), 1);
    let response = stack
        .post_orders(&serde_json::json!([{"orderid": 51, "customer": "After", "price": 1}]))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(stack.stored().await.len(), 51);
}
