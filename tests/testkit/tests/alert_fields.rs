//! The alerts and the dashboard in infra/ read the services' JSON log lines in Log
//! Analytics: every field and message a query names must be in the lines the services
//! really write. The queries' fields and messages come from `tests/infra/log_queries.py`
//! (which reads them out of the Bicep and the workbook); the lines from the real stack,
//! driven through what the alerts watch for: runs, a database that goes away (5xx, chunk
//! retries), a sidecar that starts without its binding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use testkit::pg::{PrivateServer, TestDb};
use testkit::stack::{Stack, StackOptions, orders_json};

#[derive(Debug, Deserialize)]
struct Uses {
    service: String,
    fields: Vec<String>,
    messages: Vec<String>,
}

/// Every alert's and dashboard query's use of the logs, by name: read by
/// `tests/infra/log_queries.py` with `PYTHON` (scripts/test.sh points it at the Python of
/// the checkers, which has their Bicep parser).
fn log_uses() -> BTreeMap<String, Uses> {
    let root = testkit::workspace_root();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .arg(root.join("tests/infra/log_queries.py"))
        .current_dir(&root)
        .output()
        .expect("python3 tests/infra/log_queries.py");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all: BTreeMap<String, BTreeMap<String, Uses>> =
        serde_json::from_slice(&output.stdout).unwrap();
    all.into_iter()
        .flat_map(|(kind, uses)| {
            uses.into_iter()
                .map(move |(name, uses)| (format!("{kind} {name}"), uses))
        })
        .collect()
}

fn lines(stack: &Stack, service: &str) -> Vec<Value> {
    let log = stack.log(service);
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_an_alert_or_the_dashboard_reads_is_in_the_services_real_log_lines() {
    let uses = log_uses();
    assert!(uses.len() >= 5, "{uses:?}");
    let server = PrivateServer::start().await;
    let db = TestDb::create_on(&server.admin_url()).await;
    let options = StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders_json(1, 20), 10)
    };
    let mut stack = Stack::start_on(options, db).await;
    // A run that stores the file, then one with the database gone: order-processor answers
    // 5xx and batch retries its chunks.
    stack.run_now().await;
    stack.restart("batch").await;
    server.stop().await;
    stack.run_now().await;
    // A sidecar that starts while the database is down runs without its binding.
    stack.kill("order-processor-daprd");
    stack.start_sidecar("order-processor");
    stack
        .wait_until(
            "the sidecar without its binding",
            Duration::from_secs(60),
            || async {
                let ready = stack.readiness("order-processor").await;
                ready.is_some_and(|(_, body)| {
                    body["sidecar"] == "ok" && body["binding"] == "unavailable"
                })
            },
        )
        .await;
    server.start_again().await;

    for (name, uses) in &uses {
        let lines = lines(&stack, &uses.service);
        let matching: Vec<&Value> = lines
            .iter()
            .filter(|line| uses.messages.iter().any(|m| line["message"] == m.as_str()))
            .collect();
        assert!(
            !matching.is_empty(),
            "{name}: no line of {} says any of {:?}",
            uses.service,
            uses.messages
        );
        for field in &uses.fields {
            assert!(
                matching.iter().any(|line| line.get(field).is_some()),
                "{name}: no line of {} with {:?} has the field {field:?}: {:?}",
                uses.service,
                uses.messages,
                matching.first()
            );
        }
    }
}
