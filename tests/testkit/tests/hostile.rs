//! Hostile and bad input through the real stack: every bad orders file of the corpus
//! (tests/data/bad-orders), a file of hundreds of megabytes, SQL in the data, and secrets
//! that must never reach a log line or an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::stack::{Stack, StackOptions, binaries, free_port, orders_json};

fn options(orders: String) -> StackOptions {
    StackOptions {
        // Runs are triggered by the test (POST /runs through batch's sidecar), not by ticks.
        schedule: "@every 1h".to_owned(),
        orders,
        chunk_size: 100,
        batch_env: Vec::new(),
        release: false,
        order_processor_env: Vec::new(),
        sidecar_args: Vec::new(),
        otlp: None,
    }
}

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    error: Option<String>,
    #[serde(default)]
    problems: Vec<String>,
    #[serde(default)]
    stored: Vec<i64>,
}

/// The `problem` of every warning batch logged.
fn logged_problems(stack: &Stack) -> Vec<String> {
    stack
        .log("batch")
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| v["problem"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_file_in_the_corpus_is_refused_with_its_reasons_and_only_valid_orders_are_stored()
{
    let dir = testkit::workspace_root().join("tests/data/bad-orders");
    let corpus: Corpus =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    assert!(corpus.cases.len() >= 20);
    let stack = Stack::start(options(r#"{"orders":[]}"#.to_owned())).await;
    for case in corpus.cases {
        std::fs::copy(dir.join(&case.file), stack.dir.join("orders.json")).unwrap();
        let summary = stack.run_now().await;
        match &case.error {
            Some(error) => {
                assert_eq!(summary["outcome"], "failed", "{}: {summary}", case.file);
                let said = summary["error"].as_str().unwrap_or_default();
                assert!(
                    said.contains(error),
                    "{}: expected {error:?} in {said:?}",
                    case.file
                );
                assert_eq!(summary["submitted"], 0, "{}", case.file);
            }
            None => {
                assert_eq!(summary["outcome"], "partial", "{}: {summary}", case.file);
                let (read, rejected) = (summary["read"].as_u64(), summary["rejected"].as_u64());
                assert_eq!(
                    rejected.zip(read).map(|(r, n)| n - r),
                    Some(case.stored.len() as u64),
                    "{}: {summary}",
                    case.file
                );
                let problems = logged_problems(&stack);
                for expected in &case.problems {
                    assert!(
                        problems.iter().any(|p| p.contains(expected)),
                        "{}: expected {expected:?} among {problems:#?}",
                        case.file
                    );
                }
            }
        }
        let stored: Vec<i64> = stack.stored().await.iter().map(|row| row.0).collect();
        assert_eq!(stored, case.stored, "{}", case.file);
        stack.empty_the_table().await;
    }
}

/// VmHWM (peak resident memory) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_of_hundreds_of_megabytes_is_read_in_bounded_memory_and_refused_whole() {
    let stack = Stack::start(options(r#"{"orders":[]}"#.to_owned())).await;
    // About 300 MB of valid orders, cut off before the end: only reading all of it shows
    // the file is broken, and nothing of it may be sent.
    let path = stack.dir.join("orders.json");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    file.write_all(b"{\"orders\":[").unwrap();
    let customer = "x".repeat(190);
    let mut id = 1u64;
    let mut written = 0u64;
    while written < 300_000_000 {
        let order = format!(r#"{{"orderid":{id},"customer":"{customer} {id}","price":1.25}},"#);
        file.write_all(order.as_bytes()).unwrap();
        written += order.len() as u64;
        id += 1;
    }
    file.write_all(br#"{"orderid":1,"cust"#).unwrap();
    file.flush().unwrap();
    drop(file);

    let summary = stack.run_now().await;
    assert_eq!(summary["outcome"], "failed", "{summary}");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("EOF while parsing"),
        "{summary}"
    );
    assert_eq!(summary["submitted"], 0);
    assert!(stack.stored().await.is_empty());
    let peak = peak_rss(stack.pid("batch").unwrap());
    assert!(
        peak < 80 << 20,
        "batch peaked at {} MiB reading a 300 MB file",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_sent_through_the_sidecars_is_stored_as_data() {
    let stack = Stack::start(options(orders_json(1, 1))).await;
    let attacks = [
        "Robert'); DROP TABLE orders;--",
        "' OR 1=1; DELETE FROM orders; --",
        "$1::text); TRUNCATE app.orders; --",
    ];
    let orders: Vec<Value> = attacks
        .iter()
        .enumerate()
        .map(|(i, customer)| json!({"orderid": 100 + i, "customer": customer, "price": "0.99"}))
        .collect();
    let response = stack.post_orders(&orders).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let stored: Vec<String> = stack
        .stored()
        .await
        .into_iter()
        .filter(|row| row.0 >= 100)
        .map(|row| row.1)
        .collect();
    assert_eq!(stored, attacks);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_log_line_of_a_run_holds_the_database_password_or_an_api_token() {
    let stack = Stack::start(options(orders_json(1, 30))).await;
    stack.run_now().await;
    std::fs::write(
        stack.dir.join("orders.json"),
        b"{\"orders\":[{\"orderid\":1}]}",
    )
    .unwrap();
    stack.run_now().await;
    for log in [
        "batch",
        "order-processor",
        "batch-daprd",
        "order-processor-daprd",
    ] {
        let text = stack.log(log);
        assert!(!text.is_empty(), "{log} logged nothing");
        for secret in [
            testkit::pg::APP_PASSWORD,
            &stack.dapr_token,
            &stack.app_token,
        ] {
            assert!(!text.contains(secret), "{log} logged a secret");
        }
    }
}

/// Runs order-processor with `env` until it exits; returns everything it printed.
fn order_processor_output(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(binaries(false).join("order-processor"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_password_in_the_database_url_reaches_no_log_line_and_no_error() {
    let secret = "Sup3r-S3cret-Pa55";
    let port = free_port().to_string();
    let server = testkit::pg::admin_url();
    let (host_port, _) = server.rsplit_once('/').unwrap();
    let (_, host_port) = host_port.rsplit_once('@').unwrap();
    let cases = [
        // Nothing listens there: the migrations give up after a second.
        format!("postgres://order_processor_test:{secret}@127.0.0.1:{port}/orders"),
        // A real server, the wrong password.
        format!("postgres://order_processor_test:{secret}@{host_port}/postgres"),
        // Not a URL at all.
        format!("postgres://order_processor_test:{secret}@[::1/orders"),
    ];
    for url in &cases {
        let (ok, output) = order_processor_output(&[
            ("DATABASE_URL", url),
            ("DB_STARTUP_TIMEOUT_SECS", "1"),
            ("APP_PORT", "0"),
            ("DAPR_API_TOKEN", "dapr-token-Sup3r-S3cret"),
            ("APP_API_TOKEN", "app-token-Sup3r-S3cret"),
        ]);
        assert!(!ok, "order-processor started with {url}");
        assert!(!output.is_empty());
        assert!(
            !output.contains("S3cret"),
            "a secret was printed:\n{output}"
        );
    }
    // The output says what went wrong, without the URL.
    let (_, output) = order_processor_output(&[("DATABASE_URL", &cases[2]), ("APP_PORT", "0")]);
    assert!(
        output.contains("DATABASE_URL is not a valid PostgreSQL URL"),
        "{output}"
    );
    let (_, output) = order_processor_output(&[
        ("DATABASE_URL", &cases[0]),
        ("APP_PORT", "0"),
        ("DB_STARTUP_TIMEOUT_SECS", "1"),
    ]);
    assert!(
        output.contains("cannot apply the database migrations"),
        "{output}"
    );
}
