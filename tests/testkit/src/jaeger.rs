//! A real trace collector for tests: Jaeger v2 (`JAEGER`, which `scripts/test.sh` builds
//! from `tools/jaeger`) with `tools/jaeger/config.yaml` on free ports, traces kept in
//! memory, read back through its query API.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::stack::free_port;
use crate::workspace_root;

/// A running Jaeger, killed when dropped.
pub struct Jaeger {
    child: Child,
    /// `host:port` of its OTLP/gRPC receiver.
    pub otlp_grpc: String,
    /// `host:port` of its OTLP/HTTP receiver.
    pub otlp_http: String,
    query: String,
    http: reqwest::Client,
}

/// One span as the query API returns it.
#[derive(Debug, Clone)]
pub struct SpanView {
    /// The service that sent it.
    pub service: String,
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// Its parent's id, if it has a parent.
    pub parent: Option<String>,
    /// The spans it is linked to (follows from), as `(trace id, span id)`.
    pub links: Vec<(String, String)>,
    /// The language of the SDK that made it (`telemetry.sdk.language`): `rust` for the
    /// services; the sidecars (daprd 1.16) say none.
    pub language: String,
    /// Its attributes, values as JSON.
    pub tags: serde_json::Map<String, Value>,
}

/// The path of Jaeger: `JAEGER`.
fn binary() -> PathBuf {
    std::env::var_os("JAEGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("set JAEGER to Jaeger v2 (scripts/test.sh builds it from tools/jaeger)")
        })
}

impl Jaeger {
    /// Starts Jaeger and waits until it is healthy.
    pub async fn start() -> Self {
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let (health, query, query_grpc, grpc, http) =
            (ports[0], ports[1], ports[2], ports[3], ports[4]);
        let child = Command::new(binary())
            .arg("--config")
            .arg(workspace_root().join("tools/jaeger/config.yaml"))
            .env("JAEGER_HEALTH_PORT", health.to_string())
            .env("JAEGER_QUERY_PORT", query.to_string())
            .env("JAEGER_QUERY_GRPC_PORT", query_grpc.to_string())
            .env("JAEGER_OTLP_GRPC_PORT", grpc.to_string())
            .env("JAEGER_OTLP_HTTP_PORT", http.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start Jaeger (JAEGER)");
        let jaeger = Self {
            child,
            otlp_grpc: format!("127.0.0.1:{grpc}"),
            otlp_http: format!("127.0.0.1:{http}"),
            query: format!("http://127.0.0.1:{query}"),
            http: reqwest::Client::new(),
        };
        let status = format!("http://127.0.0.1:{health}/status");
        for _ in 0..600 {
            if let Ok(response) = jaeger.http.get(&status).send().await
                && response.status().is_success()
            {
                return jaeger;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Jaeger did not become healthy within 60 s");
    }

    /// Stops Jaeger, as a collector that goes away would.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The spans of trace `trace_id` (hex), as stored so far.
    pub async fn trace(&self, trace_id: &str) -> Vec<SpanView> {
        let url = format!("{}/api/traces/{trace_id}", self.query);
        let response = self.http.get(&url).send().await.expect("query Jaeger");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let body: Value = response.json().await.expect("Jaeger's answer");
        let Some(trace) = body["data"].get(0) else {
            return Vec::new();
        };
        let processes = &trace["processes"];
        trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|span| {
                let process = &processes[span["processID"].as_str().unwrap_or_default()];
                let references = span["references"].as_array().cloned().unwrap_or_default();
                let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
                SpanView {
                    service: process["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    links: references
                        .iter()
                        .filter(|r| r["refType"] == "FOLLOWS_FROM")
                        .map(|r| (text(&r["traceID"]), text(&r["spanID"])))
                        .collect(),
                    language: process["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|tag| tag["key"] == "telemetry.sdk.language")
                        .map(|tag| text(&tag["value"]))
                        .unwrap_or_default(),
                    name: span["operationName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    id: span["spanID"].as_str().unwrap_or_default().to_owned(),
                    parent: span["references"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .and_then(|r| r["spanID"].as_str())
                        .map(str::to_owned),
                    tags: span["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|tag| {
                            Some((tag["key"].as_str()?.to_owned(), tag["value"].clone()))
                        })
                        .collect(),
                }
            })
            .collect()
    }
}
