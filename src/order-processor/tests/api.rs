//! order-processor's HTTP API against a real PostgreSQL, a fresh database per test. The
//! Dapr binding is replaced by a writer that runs the very statement the binding runs,
//! through sqlx as the same ordinary role; the end-to-end tests cover the real sidecars.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use order_processor::{WriteOutcome, db};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{FailingWriter, outcome, spawn_app, spawn_with};
use testkit::pg::TestDb;
use tonic::Code;

#[tokio::test]
async fn new_orders_are_stored_with_exact_prices() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            r#"[{"orderid":1,"customer":"John Smith","price":100.32},
                  {"orderid":2,"customer":"Jane Doe","price":"9999999999.99"}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        outcome(body),
        WriteOutcome {
            received: 2,
            inserted: 2,
            unchanged: 0,
            conflicts: vec![]
        }
    );
    assert_eq!(
        app.stored().await,
        vec![
            (1, "John Smith".to_owned(), "100.32".to_owned()),
            (2, "Jane Doe".to_owned(), "9999999999.99".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_single_order_object_is_accepted() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(r#"{"orderid":7,"customer":"Solo","price":1}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(outcome(body).inserted, 1);
}

#[tokio::test]
async fn duplicate_order_is_not_written_twice() {
    let app = spawn_app().await;
    let orders =
        r#"[{"orderid":1,"customer":"A","price":1.50},{"orderid":2,"customer":"B","price":2}]"#;
    app.post(orders).await;
    let (status, body) = app.post(orders).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        outcome(body),
        WriteOutcome {
            received: 2,
            inserted: 0,
            unchanged: 2,
            conflicts: vec![]
        }
    );
    assert_eq!(app.stored().await.len(), 2);
}

#[tokio::test]
async fn changed_order_is_reported_as_a_conflict_and_not_overwritten() {
    let app = spawn_app().await;
    app.post(r#"[{"orderid":1,"customer":"A","price":1},{"orderid":2,"customer":"B","price":2}]"#)
        .await;
    let (status, body) = app
        .post(
            r#"[{"orderid":1,"customer":"A","price":1.00},
                  {"orderid":2,"customer":"B","price":3},
                  {"orderid":3,"customer":"C","price":3}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        outcome(body),
        WriteOutcome {
            received: 3,
            inserted: 1,
            unchanged: 1,
            conflicts: vec![2]
        }
    );
    assert_eq!(
        app.stored().await[1],
        (2, "B".to_owned(), "2.00".to_owned())
    );
}

#[tokio::test]
async fn request_with_one_invalid_order_stores_nothing() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            r#"[{"orderid":1,"customer":"A","price":1},
                  {"orderid":2,"customer":"","price":1.005},
                  {"orderid":3,"customer":"C","price":3}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_orders");
    assert_eq!(
        body["error"]["message"],
        "1 order is invalid; nothing was stored"
    );
    assert_eq!(
        body["error"]["details"],
        json!([
            {"index": 1, "orderid": 2, "field": "customer", "reason": "must not be blank"},
            {"index": 1, "orderid": 2, "field": "price", "reason": "must have at most 2 decimal places"},
        ])
    );
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn duplicate_ids_in_one_request_are_invalid() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(r#"[{"orderid":5,"customer":"A","price":1},{"orderid":5,"customer":"A","price":1}]"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "duplicates the order at index 0"
    );
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn malformed_json_is_refused_with_the_error_shape() {
    let app = spawn_app().await;
    let (status, body) = app.post(r#"[{"orderid":1,"customer":"A""#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON"),
        "{body}"
    );
    for bad in ["", "42", "[]", "\"orders\""] {
        let (status, body) = app.post(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
}

#[tokio::test]
async fn too_many_orders_in_one_request_are_refused_with_the_count_and_the_limit() {
    let app = spawn_app().await;
    let orders: Vec<Value> = (1..=101)
        .map(|id| json!({"orderid": id, "customer": "A", "price": 1}))
        .collect();
    let (status, body) = app.post(serde_json::to_string(&orders).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": {
            "code": "too_many_orders",
            "message": "the request holds 101 orders; at most 100 are accepted (MAX_ORDERS_PER_REQUEST)",
        }})
    );
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn body_over_the_limit_is_refused_with_413() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"orderid":1,"customer":"{}","price":1}}"#,
        "x".repeat(5 << 20)
    );
    let (status, body) = app.post(body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn stored_order_is_read_back_exactly() {
    let app = spawn_app().await;
    app.post(r#"{"orderid":42,"customer":"Zoë","price":0.10}"#)
        .await;
    let (status, body) = app.get("/orders/42").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"orderid": 42, "customer": "Zoë", "price": 0.10})
    );
    let raw = app
        .http
        .get(format!("{}/orders/42", app.url))
        .send()
        .await
        .unwrap();
    assert!(raw.text().await.unwrap().contains(r#""price":0.10"#));
}

#[tokio::test]
async fn unknown_order_is_404_and_bad_id_is_400() {
    let app = spawn_app().await;
    let (status, body) = app.get("/orders/9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "order 9 does not exist"}})
    );
    let (status, body) = app.get("/orders/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_parameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("id ")
    );
}

#[tokio::test]
async fn orders_are_paged_by_keyset() {
    let app = spawn_app().await;
    let orders: Vec<Value> = (1..=5)
        .map(|id| json!({"orderid": id * 10, "customer": "A", "price": 1}))
        .collect();
    app.post(serde_json::to_string(&orders).unwrap()).await;

    let (_, first) = app.get("/orders?limit=2").await;
    let ids = |page: &Value| -> Vec<i64> {
        page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["orderid"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&first), vec![10, 20]);
    assert_eq!(first["next_after"], 20);
    let (_, last) = app.get("/orders?limit=3&after=20").await;
    assert_eq!(ids(&last), vec![30, 40, 50]);
    let (_, empty) = app.get("/orders?after=50").await;
    assert_eq!(ids(&empty), Vec::<i64>::new());
    assert!(empty.get("next_after").is_none());

    let (status, body) = app.get("/orders?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("limit must be")
    );
}

#[tokio::test]
async fn each_refusal_of_the_binding_call_is_answered_with_its_stable_code_and_no_internals() {
    let forbidden = json!({"error": {
        "code": "binding_forbidden",
        "message": "order-processor's sidecar refused the binding call: check that \
                    order-processor's DAPR_API_TOKEN is its sidecar's; details are in \
                    order-processor's log",
    }});
    let unavailable =
        json!({"error": {"code": "unavailable", "message": "storage is unavailable"}});
    let too_large = json!({"error": {
        "code": "too_large_for_binding",
        "message": "the orders are too large for order-processor's sidecar to pass to the \
                    database in one call; send smaller requests (fewer orders)",
    }});
    let cases = [
        (
            Code::ResourceExhausted,
            StatusCode::PAYLOAD_TOO_LARGE,
            &too_large,
        ),
        (
            Code::Unauthenticated,
            StatusCode::INTERNAL_SERVER_ERROR,
            &forbidden,
        ),
        (
            Code::PermissionDenied,
            StatusCode::INTERNAL_SERVER_ERROR,
            &forbidden,
        ),
        (
            Code::Internal,
            StatusCode::SERVICE_UNAVAILABLE,
            &unavailable,
        ),
        (
            Code::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            &unavailable,
        ),
        (
            Code::Cancelled,
            StatusCode::SERVICE_UNAVAILABLE,
            &unavailable,
        ),
    ];
    for (code, status, answer) in cases {
        let app = spawn_with(|_| FailingWriter(code)).await;
        let (got, body) = app.post(r#"{"orderid":1,"customer":"A","price":1}"#).await;
        assert_eq!((got, &body), (status, answer), "{code:?}");
        assert!(app.stored().await.is_empty());
    }
}

#[tokio::test]
async fn readiness_fails_without_a_sidecar_but_liveness_does_not() {
    let app = spawn_app().await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"sidecar": "unavailable", "binding": "unavailable", "database": "ok", "schema": "ok"})
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_app_role_cannot_create_objects_outside_its_schema() {
    let db = TestDb::create().await;
    let pool = db.app_pool().await;
    let error = sqlx::query("CREATE TABLE public.intruder (id int)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    let is_super: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!is_super);
}

#[tokio::test]
async fn migrations_started_by_two_replicas_at_once_both_succeed() {
    let db = TestDb::create().await;
    let (a, b) = (db.app_pool().await, db.app_pool().await);
    let (first, second) = tokio::join!(
        db::migrate(&a, Duration::ZERO),
        db::migrate(&b, Duration::ZERO)
    );
    first.unwrap();
    second.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(applied, db::MIGRATOR.iter().count() as i64);
}
