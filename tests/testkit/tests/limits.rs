//! Size and count limits through the real stack (PostgreSQL, two daprd, both services):
//! the largest valid orders fit whatever CHUNK_SIZE says, a per-request limit below
//! CHUNK_SIZE still stores every order, and a chunk that one sidecar refuses for good
//! holds back no other chunk and is named in the run's summary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use testkit::stack::{Stack, StackOptions, expected_rows, orders_json};

/// The longest price text a valid order can have: trailing zeros are allowed.
const LONGEST_PRICE: &str = "7.9200000000000000000000000000";
/// The first of the 19-digit ids.
const FIRST_ID: i64 = 9_000_000_000_000_000_000;

/// Runs are triggered by the test, never by a tick.
fn options(orders: String, chunk_size: usize) -> StackOptions {
    let mut options = StackOptions::every_second(orders, chunk_size);
    options.schedule = "@every 1h".to_owned();
    options
}

/// `count` distinct orders as large as validation allows: 19-digit ids, 200 characters of
/// the kinds that grow most on the way (quotes and backslashes, escaped twice on their way
/// into the binding's `params`; four-byte characters), the longest price text.
fn largest_orders(count: i64) -> (String, Vec<(i64, String)>) {
    let kinds = ['"', '\\', '😀'];
    let mut expected = Vec::new();
    let lines: Vec<String> = (0..count)
        .map(|i| {
            let id = FIRST_ID + i;
            let kind = kinds[usize::try_from(i).unwrap() % kinds.len()];
            // Distinct customers: a digit in front of 199 characters of one kind.
            let customer: String =
                std::iter::once(char::from(b'0' + u8::try_from(i % 10).unwrap()))
                    .chain(std::iter::repeat_n(kind, 199))
                    .collect();
            expected.push((id, customer.clone()));
            format!(
                r#"{{"orderid":{id},"customer":{},"price":{LONGEST_PRICE}}}"#,
                serde_json::to_string(&customer).unwrap()
            )
        })
        .collect();
    (
        format!("{{\"orders\":[\n{}\n]}}", lines.join(",\n")),
        expected,
    )
}

async fn stored_ids_and_customers(stack: &Stack) -> Vec<(i64, String)> {
    stack
        .stored()
        .await
        .into_iter()
        .map(|(id, customer, _)| (id, customer))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_valid_orders_are_stored_completely_at_every_chunk_size() {
    // Once escaped for the binding's params, the orders of one chunk of 5000 take more than
    // the 4 MiB daprd takes in one message: cut by count alone, they would not fit.
    let (file, expected) = largest_orders(6000);
    let in_params = serde_json::to_string(&serde_json::to_string(&file).unwrap()).unwrap();
    assert!(
        in_params.len() * 5000 / 6000 > 4 * 1024 * 1024,
        "{} bytes",
        in_params.len()
    );
    let mut stack = Stack::start(options(file, 1)).await;

    // The smallest, the default, one between, the largest CHUNK_SIZE batch accepts.
    for chunk_size in [1, 2000, 3333, 5000] {
        stack.empty_the_table().await;
        stack.kill("batch");
        stack.set_batch_env("CHUNK_SIZE", &chunk_size.to_string());
        stack.set_batch_env("CHUNKS_IN_FLIGHT", "16");
        stack.start_batch();
        stack.wait_ready("batch").await;

        let summary = stack.run_now().await;
        assert_eq!(
            summary["outcome"], "completed",
            "CHUNK_SIZE={chunk_size}: {summary}"
        );
        assert_eq!(
            summary["inserted"], 6000,
            "CHUNK_SIZE={chunk_size}: {summary}"
        );
        assert_eq!(
            stored_ids_and_customers(&stack).await,
            expected,
            "CHUNK_SIZE={chunk_size}"
        );
        let prices: Vec<String> = stack
            .stored()
            .await
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        assert!(
            prices.iter().all(|p| p == "7.92"),
            "CHUNK_SIZE={chunk_size}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_request_limit_below_the_chunk_size_still_stores_every_order() {
    let mut options = options(orders_json(1, 1000), 250);
    options
        .order_processor_env
        .push(("MAX_ORDERS_PER_REQUEST".to_owned(), "100".to_owned()));
    let stack = Stack::start(options).await;

    let summary = stack.run_now().await;
    assert_eq!(summary["outcome"], "completed", "{summary}");
    assert_eq!(
        (
            &summary["inserted"],
            &summary["rejected"],
            &summary["unsendable"]
        ),
        (&Value::from(1000), &Value::from(0), &Value::from(0)),
        "{summary}"
    );
    assert_eq!(stack.stored().await, expected_rows(1, 1000));
    let log = stack.log("batch");
    assert!(
        log.contains("MAX_ORDERS_PER_REQUEST") && log.contains("CHUNK_SIZE"),
        "batch says which setting to change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_refused_for_good_holds_back_no_other_and_the_summary_says_why() {
    // batch's own sidecar sends messages of 1 KiB at most. Chunks of 5 short orders fit;
    // order 23, 200 four-byte characters, does not even alone. The chunk with it is split in
    // halves until order 23 is alone and refused for good; every other order is stored in
    // the same run.
    let orders: Vec<String> = (1..=50)
        .map(|id| {
            let customer = if id == 23 {
                format!("{id}{}", "😀".repeat(198))
            } else {
                format!("Customer {id}")
            };
            format!(
                r#"{{"orderid":{id},"customer":{},"price":1.50}}"#,
                serde_json::to_string(&customer).unwrap()
            )
        })
        .collect();
    let file = format!("{{\"orders\":[\n{}\n]}}", orders.join(",\n"));
    let mut options = options(file, 5);
    options
        .sidecar_args
        .push(("batch", "--max-body-size=1Ki".to_owned()));
    let stack = Stack::start(options).await;

    let summary = stack.run_now().await;
    assert_eq!(summary["outcome"], "partial", "{summary}");
    assert_eq!(
        (
            &summary["inserted"],
            &summary["unsendable"],
            &summary["deferred"]
        ),
        (&Value::from(49), &Value::from(1), &Value::from(0)),
        "every other order is stored in the same run: {summary}"
    );
    let refused = &summary["unsendable_chunks"][0];
    assert_eq!(
        (&refused["first"], &refused["orders"]),
        (&Value::from(22), &Value::from(1)),
        "{summary}"
    );
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("larger than max"),
        "the reason names the refusal: {summary}"
    );
    assert!(
        refused["what_to_change"]
            .as_str()
            .unwrap()
            .contains("request body limits"),
        "{summary}"
    );
    let stored: Vec<i64> = stack
        .stored()
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored, (1..=22).chain(24..=50).collect::<Vec<i64>>());

    // The next run does not send it again while its pause lasts, and says so. Chunks are
    // cut smaller since the refusal, so some stored orders fall into new chunks: those are
    // sent again and found already present, never written twice.
    let again = stack.run_now().await;
    assert_eq!(again["unsendable"], 1, "{again}");
    assert_eq!(again["unsendable_chunks"][0]["first"], 22, "{again}");
    assert_eq!(again["inserted"], 0, "{again}");
    assert_eq!(
        again["skipped"].as_u64().unwrap() + again["already_present"].as_u64().unwrap(),
        49,
        "{again}"
    );
    assert_eq!(
        again["submitted"], again["already_present"],
        "order 23 is not sent while it waits: {again}"
    );
    assert_eq!(stack.stored().await.len(), 49);
}
