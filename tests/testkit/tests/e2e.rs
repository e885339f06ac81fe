//! End to end: PostgreSQL, two real daprd sidecars and both services as processes, the
//! cron binding firing every second. Orders go batch -> sidecar -> sidecar ->
//! order-processor -> PostgreSQL binding, and the database is checked row by row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::stack::{Stack, StackOptions, expected_rows, orders_json};

const PATIENCE: Duration = Duration::from_secs(90);

fn runs(stack: &Stack) -> usize {
    stack.summaries().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_order_of_the_file_is_stored_exactly_once_after_several_ticks() {
    let stack = Stack::start(StackOptions::every_second(orders_json(1, 250), 40)).await;
    stack
        .wait_until("all 250 orders stored", PATIENCE, || async {
            stack.stored().await.len() >= 250
        })
        .await;
    let after_first = runs(&stack);
    stack
        .wait_until("three more ticks", PATIENCE, || async {
            runs(&stack) >= after_first + 3
        })
        .await;

    assert_eq!(stack.stored().await, expected_rows(1, 250));
    let summaries = stack.summaries();
    let first = summaries
        .iter()
        .find(|s| s["inserted"].as_u64() > Some(0))
        .unwrap();
    assert_eq!(first["read"], 250);
    assert_eq!(first["submitted"], 250);
    assert_eq!(first["inserted"], 250);
    assert_eq!(summaries.last().unwrap()["outcome"], "unchanged");
    assert_eq!(
        summaries
            .iter()
            .map(|s| s["inserted"].as_u64().unwrap())
            .sum::<u64>(),
        250
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_with_bad_orders_stores_every_valid_order_and_says_which_are_not() {
    // Chunks of 10: order 15 has a negative price, order 37 a blank customer. Every other
    // order is stored, those in their chunks too; the file is read once, then skipped.
    let orders = orders_json(1, 50)
        .replace(
            r#""orderid":15,"customer":"Customer 15","price":15.15"#,
            r#""orderid":15,"customer":"Customer 15","price":-15.15"#,
        )
        .replace(r#""customer":"Customer 37""#, r#""customer":"  ""#);
    let stack = Stack::start(StackOptions::every_second(orders, 10)).await;
    stack
        .wait_until("two runs", PATIENCE, || async { runs(&stack) >= 2 })
        .await;

    let ids: Vec<i64> = stack.stored().await.iter().map(|row| row.0).collect();
    let want: Vec<i64> = (1..=50).filter(|id| ![15, 37].contains(id)).collect();
    assert_eq!(ids, want);

    let first = &stack.summaries()[0];
    assert_eq!(
        (first["rejected"].as_u64(), first["inserted"].as_u64()),
        (Some(2), Some(48))
    );
    assert_eq!(first["outcome"], "partial");
    let log = stack.log("batch");
    assert!(
        log.contains("order at index 14 (orderid 15): price must not be negative"),
        "{log}"
    );
    assert!(
        log.contains("order at index 36 (orderid 37): customer must not be blank"),
        "{log}"
    );
    // Nothing is left to retry: later ticks skip the file.
    let second = &stack.summaries()[1];
    assert_eq!(
        (second["outcome"].as_str(), second["submitted"].as_u64()),
        (Some("unchanged"), Some(0))
    );
    assert!(log.contains("every order of the file is settled"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_orders_sent_through_the_sidecars_are_refused_with_reasons() {
    let stack = Stack::start(StackOptions::every_second(orders_json(1, 1), 10)).await;
    let response = stack
        .post_orders(&json!([{"orderid": 900, "customer": "A", "price": 1}, {"orderid": 901, "customer": "B", "price": "1.999"}]))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_orders");
    assert_eq!(body["error"]["details"][0]["orderid"], 901);
    assert_eq!(body["error"]["details"][0]["field"], "price");
    assert!(stack.stored().await.iter().all(|row| row.0 < 900));
}

/// Runs are triggered by the test, never by a tick.
fn on_demand(orders: String, chunk_size: usize) -> StackOptions {
    StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders, chunk_size)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_order_processor_during_a_run_loses_and_duplicates_nothing() {
    let total = 600;
    let mut stack = Stack::start(on_demand(orders_json(1, total), 20)).await;
    // Writes are held, so the run is surely under way when order-processor goes.
    let held = stack.hold_writes().await;
    let run = stack.start_run();
    stack.wait_for_waiting_writes(1).await;
    stack.kill("order-processor");
    held.release().await;
    let first = run.await.unwrap().expect("the run's summary");
    assert!(first["deferred"].as_u64() > Some(0), "{first}");
    assert!(first["outcome"] == "partial", "{first}");

    stack.start_order_processor();
    stack.wait_ready("order-processor").await;
    stack.run_until_stored(total as usize).await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_stops_within_the_grace_period_mid_run_and_the_next_run_completes_the_file() {
    let total = 2000;
    let mut stack = Stack::start(on_demand(orders_json(1, total), 10)).await;
    let held = stack.hold_writes().await;
    let run = stack.start_run();
    stack.wait_for_waiting_writes(1).await;

    let took = stack.terminate("batch");
    assert!(took < Duration::from_secs(5), "batch took {took:?} to stop");
    let log = stack.log("batch");
    assert!(log.contains(r#""outcome":"cancelled""#), "{log}");
    // The trigger that started the run is answered within the grace period, if at all.
    if let Some(summary) = run.await.unwrap() {
        assert_eq!(summary["outcome"], "cancelled", "{summary}");
    }
    held.release().await;

    stack.start_batch();
    stack.wait_ready("batch").await;
    stack.run_until_stored(total as usize).await;
    assert_eq!(stack.stored().await, expected_rows(1, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_batch_sends_the_file_again_and_duplicates_nothing() {
    let total = 300;
    let mut stack = Stack::start(StackOptions::every_second(orders_json(1, total), 50)).await;
    stack
        .wait_until("every order stored", PATIENCE, || async {
            stack.stored().await.len() >= total as usize
        })
        .await;

    // A new process remembers nothing: it sends the whole file again.
    stack.kill("batch");
    let before = runs(&stack);
    stack.start_batch();
    stack.wait_ready("batch").await;
    stack
        .wait_until("a run of the new process", PATIENCE, || async {
            runs(&stack) > before
        })
        .await;

    let resent = &stack.summaries()[before];
    assert_eq!(resent["submitted"], total);
    assert_eq!(resent["already_present"], total);
    assert_eq!(resent["inserted"], 0);
    assert_eq!(resent["outcome"], "completed");
    assert_eq!(stack.stored().await, expected_rows(1, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_sidecar_is_refused_the_postgresql_binding() {
    let stack = Stack::start(StackOptions::every_second(orders_json(1, 5), 10)).await;
    stack
        .wait_until("5 orders stored", PATIENCE, || async {
            stack.stored().await.len() == 5
        })
        .await;
    let client = stack.sidecar_client();
    let exec = |port: u16, sql: &str| {
        client
            .post(format!("http://127.0.0.1:{port}/v1.0/bindings/sqldb"))
            .json(&json!({"operation": "exec", "metadata": {"sql": sql}}))
            .send()
    };
    let refused = exec(stack.batch.http, "DELETE FROM orders").await.unwrap();
    assert!(!refused.status().is_success(), "batch's sidecar ran SQL");
    let body = refused.text().await.unwrap();
    assert!(body.contains("ERR_INVOKE_OUTPUT_BINDING"), "{body}");
    assert_eq!(stack.stored().await.len(), 5);

    // The same call through order-processor's sidecar works: the scope is what refused it.
    let allowed = exec(stack.op.http, "SELECT 1").await.unwrap();
    assert!(
        allowed.status().is_success(),
        "{}",
        allowed.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_the_api_tokens_are_refused_by_sidecars_and_apps() {
    let stack = Stack::start(StackOptions::every_second(orders_json(1, 1), 10)).await;
    let anonymous = reqwest::Client::new();
    let orders = json!([{"orderid": 77, "customer": "Mallory", "price": 1}]);

    // To order-processor's own port, bypassing the sidecar: no app token, refused.
    let direct = anonymous
        .post(format!("http://127.0.0.1:{}/orders", stack.op.app))
        .json(&orders)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let body: Value = direct.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    // A wrong token is no better.
    let wrong = anonymous
        .post(format!("http://127.0.0.1:{}/orders", stack.op.app))
        .header("dapr-api-token", "guess")
        .json(&orders)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // batch's trigger likewise, without a token and with a wrong one.
    for token in [None, Some("guess")] {
        let mut trigger = anonymous.post(format!("http://127.0.0.1:{}/runs", stack.batch.app));
        if let Some(token) = token {
            trigger = trigger.header("dapr-api-token", token);
        }
        assert_eq!(trigger.send().await.unwrap().status(), 401, "{token:?}");
    }
    // Health checks stay open for the platform's probes.
    let health = anonymous
        .get(format!("http://127.0.0.1:{}/healthz", stack.op.app))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // To a sidecar without the Dapr API token: refused by daprd.
    let via_sidecar = anonymous
        .post(stack.orders_via_sidecars())
        .json(&orders)
        .send()
        .await
        .unwrap();
    assert_eq!(via_sidecar.status(), 401);

    // With it, the call goes through both sidecars and the app accepts the sidecar's token.
    let allowed = stack.post_orders(&orders).await;
    assert_eq!(allowed.status(), 200, "{}", allowed.text().await.unwrap());
    assert!(stack.stored().await.iter().any(|row| row.0 == 77));
}
