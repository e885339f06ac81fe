//! Faults through the real stack (PostgreSQL, two daprd, both services as processes):
//! the database, a sidecar or a service goes away in the middle of a run. After the next
//! ticks every order is stored exactly once, checked row by row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::pg::{PrivateServer, TestDb};
use testkit::stack::{Stack, StackOptions, expected_rows, orders_json};

const PATIENCE: Duration = Duration::from_secs(120);

fn deferred_runs(stack: &Stack) -> usize {
    stack
        .summaries()
        .iter()
        .filter(|s| s["deferred"].as_u64() > Some(0))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_during_a_run_and_started_again_loses_and_duplicates_nothing() {
    let total = 6000;
    let server = PrivateServer::start().await;
    let db = TestDb::create_on(&server.admin_url()).await;
    let stack = Stack::start_on(StackOptions::every_second(orders_json(1, total), 20), db).await;
    stack
        .wait_until("the first rows", PATIENCE, || async {
            !stack.stored().await.is_empty()
        })
        .await;

    server.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again().await;

    stack
        .wait_until("every order stored", PATIENCE, || async {
            stack.stored().await.len() >= total as usize
        })
        .await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
    assert!(
        deferred_runs(&stack) > 0,
        "no run saw the database down:\n{}",
        stack.log("batch")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn order_processor_sidecar_restarted_during_a_run_loses_and_duplicates_nothing() {
    let total = 6000;
    let mut stack = Stack::start(StackOptions::every_second(orders_json(1, total), 20)).await;
    stack
        .wait_until("the first rows", PATIENCE, || async {
            !stack.stored().await.is_empty()
        })
        .await;

    stack.kill("order-processor-daprd");
    let at_the_kill = stack.stored().await.len();
    assert!(
        at_the_kill < total as usize,
        "the run finished before the sidecar was killed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_sidecar("order-processor");

    // Calls fail while it is away: the retries of batch's sidecar, then batch's own, then
    // the next tick carry the run on.
    stack
        .wait_until("every order stored", PATIENCE, || async {
            stack.stored().await.len() >= total as usize
        })
        .await;
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
