//! Hostile and bad requests against order-processor and a real PostgreSQL: the corpus in
//! tests/data/bad-requests, bodies too large to hold, and SQL in every string field.
//! Each gets a clear error naming what is wrong, and nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use support::spawn_app;

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    body: Option<String>,
    file: Option<String>,
    status: u16,
    code: String,
    says: String,
}

fn corpus_dir() -> std::path::PathBuf {
    testkit::workspace_root().join("tests/data/bad-requests")
}

#[tokio::test]
async fn every_bad_request_in_the_corpus_is_refused_with_its_reason_and_stores_nothing() {
    let corpus: Corpus =
        serde_json::from_slice(&std::fs::read(corpus_dir().join("cases.json")).unwrap()).unwrap();
    assert!(corpus.cases.len() >= 15);
    let app = spawn_app().await;
    for case in corpus.cases {
        let body = match (&case.body, &case.file) {
            (Some(body), None) => body.clone().into_bytes(),
            (None, Some(file)) => std::fs::read(corpus_dir().join(file)).unwrap(),
            _ => panic!("{}: give `body` or `file`", case.name),
        };
        let (status, answer) = app.post(body).await;
        assert_eq!(status.as_u16(), case.status, "{}: {answer}", case.name);
        assert_eq!(
            answer["error"]["code"], case.code,
            "{}: {answer}",
            case.name
        );
        // What a reader sees: the message, and each detail as "<field> <reason>".
        let mut text = answer["error"]["message"].as_str().unwrap().to_owned();
        for detail in answer["error"]["details"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "; {} {}",
                detail["field"].as_str().unwrap(),
                detail["reason"].as_str().unwrap()
            ));
        }
        assert!(
            text.contains(&case.says),
            "{}: expected {:?} in {answer}",
            case.name,
            case.says
        );
        assert!(
            app.stored().await.is_empty(),
            "{} stored something",
            case.name
        );
    }
}

#[tokio::test]
async fn a_huge_customer_within_the_body_limit_is_refused_by_name_and_length() {
    let app = spawn_app().await;
    let customer = "é".repeat(1 << 20);
    let (status, answer) = app
        .post(json!({"orderid": 1, "customer": customer, "price": 1}).to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["details"][0]["field"], "customer");
    assert_eq!(
        answer["error"]["details"][0]["reason"],
        "must be at most 200 characters long, not 1048576"
    );
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn a_body_of_hundreds_of_megabytes_is_refused_without_reading_it_all() {
    let app = spawn_app().await;
    // 300 MB streamed in 1 MB pieces: the service stops reading at its 4 MiB limit.
    let piece = bytes::Bytes::from(vec![b' '; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..300).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
    let response = app
        .http
        .post(format!("{}/orders", app.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match response {
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let answer: serde_json::Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "body_too_large");
        }
        // The server may close the connection before the client has sent everything.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn sql_in_every_string_field_is_stored_verbatim_or_refused_as_data() {
    let app = spawn_app().await;
    let attacks = [
        "Robert'); DROP TABLE orders;--",
        "' OR '1'='1",
        "\"; DELETE FROM orders WHERE ''='",
        "$1); TRUNCATE orders; --",
        "x'::text::jsonb; SELECT pg_sleep(10); --",
        "\\'; COPY orders TO '/tmp/x'; --",
    ];
    let orders: Vec<_> = attacks
        .iter()
        .enumerate()
        .map(|(i, customer)| json!({"orderid": i + 1, "customer": customer, "price": 1}))
        .collect();
    let (status, answer) = app.post(serde_json::to_string(&orders).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stored: Vec<String> = app.stored().await.into_iter().map(|row| row.1).collect();
    assert_eq!(stored, attacks);

    // The numeric fields take no text at all: SQL there is refused, by field.
    let (status, answer) = app
        .post(r#"{"orderid":"1; DROP TABLE orders","customer":"A","price":"1 OR 1=1"}"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = answer["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["orderid", "price"]);
    assert_eq!(app.stored().await.len(), attacks.len());
}
