//! A fake order-processor for runner tests: it keeps what it stores, answers as
//! order-processor's contract says (stored, already there, in conflict, too many orders),
//! or as a test scripts it, and can hold requests until a test lets them go.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use batch::Settings;
use batch::outcome::Reply;
use batch::runner::Runner;
use batch::send::OrderSink;
use batch::source::OrdersSource;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

type Script = Box<dyn Fn(&[i64]) -> Option<Reply> + Send + Sync>;
type Holds = Box<dyn Fn(&[i64]) -> bool + Send + Sync>;

/// Holds the requests a test picks until it lets them go, and says when one arrives.
pub struct Gate {
    holds: Holds,
    arrived: mpsc::UnboundedSender<Vec<i64>>,
    permits: Arc<Semaphore>,
}

/// What a test sees of a gate.
pub struct GateControl {
    /// The ids of each held request, as it arrives.
    pub arrived: mpsc::UnboundedReceiver<Vec<i64>>,
    /// One permit lets one held request go on.
    pub permits: Arc<Semaphore>,
}

/// order-processor, in memory.
pub struct FakeOrderProcessor {
    /// Stored orders by id.
    pub stored: Mutex<BTreeMap<i64, Value>>,
    /// The ids of every request received, in order.
    pub requests: Mutex<Vec<Vec<i64>>>,
    /// Requests under way, and the most there ever were.
    pub in_flight: Mutex<(usize, usize)>,
    max_orders: usize,
    script: Script,
    gate: Option<Gate>,
}

impl FakeOrderProcessor {
    /// Stores every request of at most `max_orders` orders; `script` may answer instead.
    pub fn new(
        max_orders: usize,
        script: impl Fn(&[i64]) -> Option<Reply> + Send + Sync + 'static,
    ) -> Self {
        Self {
            stored: Mutex::default(),
            requests: Mutex::default(),
            in_flight: Mutex::default(),
            max_orders,
            script: Box::new(script),
            gate: None,
        }
    }

    /// Stores every request.
    pub fn storing() -> Self {
        Self::new(usize::MAX, |_| None)
    }

    /// Holds the requests for which `holds` is true.
    pub fn with_gate(
        mut self,
        holds: impl Fn(&[i64]) -> bool + Send + Sync + 'static,
    ) -> (Self, GateControl) {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(0));
        self.gate = Some(Gate {
            holds: Box::new(holds),
            arrived: tx,
            permits: Arc::clone(&permits),
        });
        (
            self,
            GateControl {
                arrived: rx,
                permits,
            },
        )
    }

    /// The ids of every request received.
    pub fn requests(&self) -> Vec<Vec<i64>> {
        self.requests.lock().unwrap().clone()
    }

    /// The ids stored.
    pub fn stored_ids(&self) -> Vec<i64> {
        self.stored.lock().unwrap().keys().copied().collect()
    }

    fn store(&self, orders: &[Value]) -> Reply {
        let mut stored = self.stored.lock().unwrap();
        let (mut inserted, mut unchanged, mut conflicts) = (0, 0, Vec::new());
        for order in orders {
            let id = order["orderid"].as_i64().unwrap();
            match stored.get(&id) {
                None => {
                    stored.insert(id, order.clone());
                    inserted += 1;
                }
                Some(same) if same == order => unchanged += 1,
                Some(_) => conflicts.push(id),
            }
        }
        answer(
            200,
            &json!({ "received": orders.len(), "inserted": inserted, "unchanged": unchanged, "conflicts": conflicts }),
        )
    }
}

/// An answer with a JSON body.
pub fn answer(status: u16, body: &Value) -> Reply {
    Ok((
        StatusCode::from_u16(status).unwrap(),
        Bytes::from(body.to_string()),
    ))
}

/// order-processor's error shape.
pub fn refusal(status: u16, code: &'static str, message: &str) -> Reply {
    answer(
        status,
        &serde_json::to_value(common::wire::ErrorBody::new(code, message)).unwrap(),
    )
}

/// A shared [`FakeOrderProcessor`], as a runner's sink.
#[derive(Clone)]
pub struct Shared(pub Arc<FakeOrderProcessor>);

impl OrderSink for Shared {
    async fn send(&self, body: Bytes, trace: &batch::send::TraceHeaders) -> Reply {
        self.0.send(body, trace).await
    }
}

impl FakeOrderProcessor {
    async fn send(&self, body: Bytes, _: &batch::send::TraceHeaders) -> Reply {
        let orders: Vec<Value> = serde_json::from_slice(&body).unwrap();
        let ids: Vec<i64> = orders
            .iter()
            .map(|o| o["orderid"].as_i64().unwrap())
            .collect();
        self.requests.lock().unwrap().push(ids.clone());
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            in_flight.0 += 1;
            in_flight.1 = in_flight.1.max(in_flight.0);
        }
        if let Some(gate) = &self.gate
            && (gate.holds)(&ids)
        {
            let _ = gate.arrived.send(ids.clone());
            gate.permits.acquire().await.unwrap().forget();
        }
        self.in_flight.lock().unwrap().0 -= 1;
        if let Some(reply) = (self.script)(&ids) {
            return reply;
        }
        if orders.len() > self.max_orders {
            return refusal(
                400,
                "too_many_orders",
                &format!(
                    "the request body holds {} orders; at most {} are accepted at once",
                    orders.len(),
                    self.max_orders
                ),
            );
        }
        self.store(&orders)
    }
}

/// An orders file of `ids`, valid but for negative ids, which get a negative price.
pub fn orders_file(ids: &[i64]) -> tempfile::NamedTempFile {
    let orders: Vec<String> = ids
        .iter()
        .map(|id| {
            let price = if *id < 0 {
                "-1".to_owned()
            } else {
                format!("{id}.5")
            };
            format!(
                r#"{{"orderid":{},"customer":"C{id}","price":{price}}}"#,
                id.abs()
            )
        })
        .collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, r#"{{"orders":[{}]}}"#, orders.join(",")).unwrap();
    file
}

/// Settings for tests: chunks of `chunk_size`, `in_flight` at once, no retries.
pub fn settings(chunk_size: usize, in_flight: usize) -> Settings {
    Settings {
        chunk_size,
        chunk_bytes: batch::config::DEFAULT_CHUNK_BYTES,
        in_flight,
        max_retries: 0,
        retry_delay: std::time::Duration::from_millis(250),
        deadline: std::time::Duration::from_secs(600),
        block: batch::source::BLOCK_BYTES,
    }
}

/// A runner of `file` into `sink`.
pub fn runner(
    sink: &Arc<FakeOrderProcessor>,
    file: &tempfile::NamedTempFile,
    settings: Settings,
) -> Runner<Shared> {
    Runner::new(
        Shared(Arc::clone(sink)),
        OrdersSource::File(file.path().to_owned()),
        settings,
    )
}
