//! batch as a process sees it: started from its configuration, triggered over HTTP, sending
//! through a fake sidecar that answers as daprd and order-processor do (their limits,
//! their error shapes). Only batch's public entry points are used (`Config`, `App`), so
//! these tests hold for any implementation of the contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::config::Vars;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// daprd's default request body limit, which order-processor applies too, and which its
/// sidecar applies to the binding call.
const LIMIT: usize = 4 * 1024 * 1024;

type Hook = Box<dyn Fn(&[i64]) -> Option<(u16, String)> + Send + Sync>;
type Holds = Box<dyn Fn(&[i64]) -> bool + Send + Sync>;

/// daprd and order-processor behind it, in memory.
struct Fake {
    stored: Mutex<BTreeMap<i64, Value>>,
    /// Each request: its ids, its body's size, and the size of `params` it makes.
    requests: Mutex<Vec<(Vec<i64>, usize, usize)>>,
    max_orders: usize,
    hook: Hook,
    /// Requests to hold (never answer), and where to say that one arrived.
    hold: Option<(Holds, mpsc::UnboundedSender<Vec<i64>>)>,
}

impl Fake {
    fn new(
        max_orders: usize,
        hook: impl Fn(&[i64]) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            stored: Mutex::default(),
            requests: Mutex::default(),
            max_orders,
            hook: Box::new(hook),
            hold: None,
        }
    }

    fn stored_ids(&self) -> Vec<i64> {
        self.stored.lock().unwrap().keys().copied().collect()
    }

    fn sent(&self, id: i64) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0.contains(&id))
            .count()
    }
}

fn reply(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

fn ours(code: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message } }).to_string()
}

async fn invoke(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    if body.len() > LIMIT {
        return reply(
            413,
            json!({ "errorCode": "ERR_BODY_TOO_LARGE", "message": "request body too large" })
                .to_string(),
        );
    }
    let orders: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let ids: Vec<i64> = orders
        .iter()
        .map(|o| o["orderid"].as_i64().unwrap())
        .collect();
    let valid: Vec<common::order::Order> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| {
            common::wire::decode_order(i, o.to_string().as_bytes())
                .unwrap()
                .unwrap()
        })
        .collect();
    let params = common::wire::Params::from_orders(&valid).as_str().len();
    fake.requests
        .lock()
        .unwrap()
        .push((ids.clone(), body.len(), params));
    if let Some((holds, arrived)) = &fake.hold
        && holds(&ids)
    {
        let _ = arrived.send(ids);
        return std::future::pending().await;
    }
    if let Some((status, body)) = (fake.hook)(&ids) {
        return reply(status, body);
    }
    if ids.len() > fake.max_orders {
        let message = format!(
            "the request body holds {} orders; at most {} are accepted at once",
            ids.len(),
            fake.max_orders
        );
        return reply(400, ours("too_many_orders", &message));
    }
    if params > LIMIT {
        return reply(
            413,
            ours(
                "too_large_for_binding",
                "the binding call is larger than the sidecar accepts",
            ),
        );
    }
    let mut stored = fake.stored.lock().unwrap();
    let (mut inserted, mut unchanged, mut conflicts) = (0, 0, Vec::new());
    for (id, order) in ids.iter().zip(orders) {
        match stored.get(id) {
            None => {
                stored.insert(*id, order);
                inserted += 1;
            }
            Some(same) if *same == order => unchanged += 1,
            Some(_) => conflicts.push(*id),
        }
    }
    let outcome = json!({ "received": ids.len(), "inserted": inserted, "unchanged": unchanged, "conflicts": conflicts });
    reply(200, outcome.to_string())
}

/// A batch process, in this one.
struct Batch {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _file: tempfile::NamedTempFile,
}

impl Batch {
    async fn start(fake: &Arc<Fake>, orders: &str, env: &[(&str, &str)]) -> Self {
        let sidecar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = sidecar.local_addr().unwrap().port().to_string();
        let app = Router::new()
            .route("/v1.0/invoke/order-processor/method/orders", post(invoke))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(Arc::clone(fake));
        tokio::spawn(axum::serve(sidecar, app).into_future());

        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(orders.as_bytes()).unwrap();
        let path = file.path().to_str().unwrap().to_owned();
        let mut vars = vec![
            ("DAPR_HTTP_PORT", port.as_str()),
            ("ORDERS_FILE", path.as_str()),
            ("INVOKE_MAX_RETRIES", "0"),
        ];
        vars.extend_from_slice(env);
        let config = batch::Config::from_vars(&Vars::from_pairs(vars)).unwrap();
        let app = batch::App::build(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            _file: file,
        }
    }

    /// `POST /runs`: the run's summary.
    async fn run(&self) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://{}/runs", self.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Stops batch, as SIGTERM does.
    fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

/// An orders file.
fn orders(orders: impl Iterator<Item = (i64, String)>) -> String {
    let orders: Vec<String> = orders
        .map(|(id, customer)| {
            json!({ "orderid": id, "customer": customer, "price": 12.5 }).to_string()
        })
        .collect();
    format!(r#"{{"orders":[{}]}}"#, orders.join(","))
}

fn plain(ids: impl Iterator<Item = i64>) -> String {
    orders(ids.map(|id| (id, format!("C{id}"))))
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field].as_u64().unwrap_or(0)
}

/// Whether every order read is counted exactly once.
fn adds_up(summary: &Value) -> bool {
    let parts = [
        "inserted",
        "already_present",
        "conflicts",
        "rejected",
        "duplicates",
        "skipped",
        "deferred",
        "unsendable",
    ];
    count(summary, "read") == parts.iter().map(|p| count(summary, p)).sum::<u64>()
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_over_order_processors_per_request_limit_are_all_stored_in_smaller_chunks() {
    let fake = Arc::new(Fake::new(3, |_| None));
    let batch = Batch::start(&fake, &plain(1..=12), &[("CHUNK_SIZE", "5")]).await;
    let summary = batch.run().await;
    assert_eq!(fake.stored_ids(), (1..=12).collect::<Vec<_>>(), "{summary}");
    assert_eq!(summary["outcome"], "completed", "{summary}");
    assert_eq!(
        (count(&summary, "inserted"), count(&summary, "rejected")),
        (12, 0)
    );
    assert!(adds_up(&summary), "{summary}");
    assert_eq!(batch.run().await["outcome"], "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_the_sidecar_refuses_does_not_stop_the_chunks_after_it() {
    let fake = Arc::new(Fake::new(5000, |ids| {
        ids.contains(&1).then(|| {
            let body = json!({ "errorCode": "ERR_DIRECT_INVOKE", "message": "fail to invoke, id: order-processor" });
            (404, body.to_string())
        })
    }));
    let env = [("CHUNK_SIZE", "2"), ("CHUNKS_IN_FLIGHT", "1")];
    let batch = Batch::start(&fake, &plain(1..=6), &env).await;
    let summary = batch.run().await;
    assert_eq!(fake.stored_ids(), vec![3, 4, 5, 6], "{summary}");
    assert_eq!(summary["outcome"], "partial");
    assert_eq!(count(&summary, "unsendable"), 2, "{summary}");
    let unsent = &summary["unsendable_chunks"][0];
    assert!(
        unsent["reason"]
            .as_str()
            .unwrap()
            .contains("ERR_DIRECT_INVOKE"),
        "{summary}"
    );
    assert!(
        unsent["what_to_change"]
            .as_str()
            .unwrap()
            .contains("TARGET_APP_ID"),
        "{summary}"
    );
    assert!(adds_up(&summary), "{summary}");
    // The next run does not knock on the same door at once.
    let again = batch.run().await;
    assert_eq!(
        (fake.sent(1), count(&again, "unsendable")),
        (1, 2),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_batch_cannot_read_does_not_stop_the_chunks_after_it() {
    let fake = Arc::new(Fake::new(5000, |ids| {
        ids.contains(&1).then(|| (200, "OK".to_owned()))
    }));
    let env = [("CHUNK_SIZE", "2"), ("CHUNKS_IN_FLIGHT", "1")];
    let batch = Batch::start(&fake, &plain(1..=6), &env).await;
    let summary = batch.run().await;
    assert_eq!(fake.stored_ids(), vec![3, 4, 5, 6], "{summary}");
    assert_eq!(count(&summary, "unsendable"), 2, "{summary}");
    assert!(
        summary["unsendable_chunks"][0]["what_to_change"]
            .as_str()
            .unwrap()
            .contains("same release"),
        "{summary}"
    );
    assert!(adds_up(&summary), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_valid_orders_travel_within_daprds_limits() {
    // 200 four-byte characters fill a body; 200 quotes fill the binding's escaped params.
    for character in ["😀", "\""] {
        let customer = character.repeat(200);
        let ids = (0..5000).map(|k| i64::MAX - k);
        let fake = Arc::new(Fake::new(5000, |_| None));
        let batch = Batch::start(
            &fake,
            &orders(ids.map(|id| (id, customer.clone()))),
            &[("CHUNK_SIZE", "5000")],
        )
        .await;
        let summary = batch.run().await;
        assert_eq!(summary["outcome"], "completed", "{character}: {summary}");
        assert_eq!(count(&summary, "inserted"), 5000);
        for (_, body, params) in fake.requests.lock().unwrap().iter() {
            assert!(
                *body <= 3 << 20 && *params <= 3 << 20,
                "{character}: {body} {params}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_with_conflicts_is_partial_once_and_then_settled() {
    let fake = Arc::new(Fake::new(5000, |_| None));
    fake.stored.lock().unwrap().insert(
        2,
        json!({ "orderid": 2, "customer": "someone else", "price": 1 }),
    );
    let batch = Batch::start(&fake, &plain(1..=4), &[]).await;
    let first = batch.run().await;
    assert_eq!(first["outcome"], "partial", "{first}");
    assert_eq!(
        (count(&first, "conflicts"), count(&first, "inserted")),
        (1, 3)
    );
    assert!(adds_up(&first), "{first}");
    // Nothing to retry: the conflict is reported once, and the file is not sent again.
    let second = batch.run().await;
    assert_eq!(second["outcome"], "unchanged", "{second}");
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_batch_during_a_chunk_defers_every_order_not_stored() {
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let mut fake = Fake::new(5000, |_| None);
    fake.hold = Some((Box::new(|ids: &[i64]| ids.contains(&5)), arrived));
    let fake = Arc::new(fake);
    let env = [("CHUNK_SIZE", "2"), ("CHUNKS_IN_FLIGHT", "1")];
    let mut batch = Batch::start(&fake, &plain(1..=10), &env).await;
    let address = batch.address;
    let run = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("http://{address}/runs"))
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()
    });
    assert_eq!(arrivals.recv().await.unwrap(), vec![5, 6]);
    batch.stop();
    let summary = run.await.unwrap();
    assert_eq!(summary["outcome"], "cancelled", "{summary}");
    assert_eq!(count(&summary, "inserted"), 4, "{summary}");
    assert_eq!(count(&summary, "deferred"), 6, "{summary}");
    assert!(adds_up(&summary), "{summary}");
}
