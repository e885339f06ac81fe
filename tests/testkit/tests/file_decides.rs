//! The file alone decides what is stored, through the real stack: one file of 20,000
//! orders with invalid orders every 397 and repeated ids scattered through it, run under
//! the chunk sizes 1, 7, 500, 2000 and 5000 and under random settings of `CHUNK_SIZE`,
//! `CHUNK_BYTES`, `CHUNKS_IN_FLIGHT` and order-processor's `MAX_ORDERS_PER_REQUEST` (a
//! limit batch learns at run time). Every time, the rows stored and the run's counts are
//! the same, and what the file says they must be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::Value;
use testkit::stack::{Stack, StackOptions};

const ORDERS: i64 = 20_000;
/// Every this many elements, an invalid one.
const EVERY: usize = 397;

/// How a setting of batch (and order-processor) is run.
#[derive(Debug, Clone)]
struct Setting {
    chunk_size: usize,
    chunk_bytes: Option<usize>,
    in_flight: Option<usize>,
    max_orders_per_request: Option<usize>,
}

/// What the file says: its elements, the rows it must leave stored and its counts.
struct File {
    json: String,
    rows: Vec<(i64, String, String)>,
    counts: [u64; 5],
}

fn valid(id: i64, cents: i64) -> String {
    format!(
        r#"{{"orderid":{id},"customer":"Customer {id}","price":{}.{:02}}}"#,
        cents / 100,
        cents % 100
    )
}

/// 20,000 orders (ids 1 to 20,000, prices that follow the id); ids 101 to 105 given again
/// later with another price (every copy rejected), ids 201 to 203 given again the same
/// way (stored once); every 397th element invalid, in one of five ways; id 7 stored
/// before the run with another customer (a conflict).
fn file() -> File {
    let cents = |id: i64| (id % 1000) * 100 + id % 100;
    let mut elements: Vec<(Option<i64>, String)> = (1..=ORDERS)
        .map(|id| (Some(id), valid(id, cents(id))))
        .collect();
    for k in 0..5 {
        let id = 101 + k;
        elements.insert(
            5000 + 1000 * k as usize,
            (Some(id), valid(id, cents(id) + 1)),
        );
    }
    for k in 0..3 {
        let id = 201 + k;
        elements.insert(12_000 + 1000 * k as usize, (Some(id), valid(id, cents(id))));
    }
    let mut invalid = 0;
    for at in (EVERY - 1..elements.len()).step_by(EVERY) {
        let id = elements[at].0.expect("an id");
        assert!(!(101..=105).contains(&id) && !(201..=203).contains(&id) && id != 7);
        elements[at].1 = match invalid % 5 {
            0 => format!(r#"{{"orderid":{id},"customer":"C","price":-1}}"#),
            1 => format!(r#"{{"orderid":{id},"customer":"  ","price":1}}"#),
            2 => format!(r#"{{"orderid":{id},"customer":"C","price":1,"note":"x"}}"#),
            3 => format!(r#"{{"orderid":{id},"customer":"C","price":"1e2"}}"#),
            _ => "null".to_owned(),
        };
        elements[at].0 = None;
        invalid += 1;
    }
    let stored: std::collections::HashSet<i64> =
        elements.iter().filter_map(|(id, _)| *id).collect();
    let rows = (1..=ORDERS)
        .filter(|id| stored.contains(id) && !(101..=105).contains(id))
        .map(|id| {
            let customer = if id == 7 {
                "Someone else".to_owned()
            } else {
                format!("Customer {id}")
            };
            (
                id,
                customer,
                format!("{}.{:02}", cents(id) / 100, cents(id) % 100),
            )
        })
        .collect::<Vec<_>>();
    let read = elements.len() as u64;
    // read, inserted + already present, rejected, duplicates, conflicts
    let counts = [read, rows.len() as u64 - 1, invalid + 10, 3, 1];
    let lines: Vec<String> = elements.into_iter().map(|(_, json)| json).collect();
    File {
        json: format!("{{\"orders\":[\n{}\n]}}", lines.join(",\n")),
        rows,
        counts,
    }
}

fn counts(summary: &Value) -> [u64; 5] {
    let n = |field: &str| summary[field].as_u64().unwrap_or(0);
    [
        n("read"),
        n("inserted") + n("already_present"),
        n("rejected"),
        n("duplicates"),
        n("conflicts"),
    ]
}

/// Random settings, the same on every run of the test.
fn random_settings(count: usize) -> Vec<Setting> {
    let config = Config::default();
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(Default::default()));
    let strategy = (1usize..=5000, 886usize..=300_000, 1usize..=8, 0usize..=3).prop_map(
        |(chunk_size, chunk_bytes, in_flight, lowered)| Setting {
            chunk_size,
            chunk_bytes: Some(chunk_bytes),
            in_flight: Some(in_flight),
            // Now and then order-processor takes fewer orders than batch sends.
            max_orders_per_request: (lowered == 0 && chunk_size > 1).then_some(chunk_size / 3 + 1),
        },
    );
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("a setting").current())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_stored_and_counted_depends_on_the_file_alone_whatever_the_settings() {
    let file = file();
    let options = StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(file.json.clone(), 2000)
    };
    let mut stack = Stack::start(options).await;
    let fixed = [1, 7, 500, 2000, 5000].map(|chunk_size| Setting {
        chunk_size,
        chunk_bytes: None,
        in_flight: None,
        max_orders_per_request: None,
    });
    for setting in fixed.into_iter().chain(random_settings(3)) {
        stack.empty_the_table().await;
        sqlx::query(
            "INSERT INTO app.orders (orderid, customer, price) VALUES (7, 'Someone else', 7.07)",
        )
        .execute(&mut stack.admin().await)
        .await
        .unwrap();
        let per_request = setting.max_orders_per_request.unwrap_or(5000).to_string();
        stack.set_order_processor_env("MAX_ORDERS_PER_REQUEST", &per_request);
        stack.restart("order-processor").await;
        stack.set_batch_env("CHUNK_SIZE", &setting.chunk_size.to_string());
        let bytes = setting.chunk_bytes.map_or(String::new(), |b| b.to_string());
        stack.set_batch_env("CHUNK_BYTES", &bytes);
        let in_flight = setting.in_flight.map_or(String::new(), |n| n.to_string());
        stack.set_batch_env("CHUNKS_IN_FLIGHT", &in_flight);
        stack.restart("batch").await;

        let summary = stack.run_now().await;
        assert_eq!(counts(&summary), file.counts, "{setting:?}: {summary}");
        assert_eq!(summary["deferred"], 0, "{setting:?}: {summary}");
        assert_eq!(stack.stored().await, file.rows, "{setting:?}");
    }
}
