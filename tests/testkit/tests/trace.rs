//! Traces through the real stack and a real collector (Jaeger v2, `JAEGER`): one run is one
//! trace, from batch's run through both sidecars and order-processor to daprd's
//! `InvokeBinding`, linked parent to child, and linked to the cron binding's span of its
//! tick; server spans are named after their route; and a collector that is down costs no
//! order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use testkit::jaeger::{Jaeger, SpanView};
use testkit::stack::{Stack, StackOptions, expected_rows, free_port, orders_json};

/// The spans one run of 10 orders in chunks of 4 leaves in its trace: `(service, a part of
/// the span's name, how many)`. The sidecars' spans carry their app's id as service.
const EXPECTED: [(&str, &str, usize); 7] = [
    ("batch", "run", 1),
    ("batch", "chunk", 3),
    ("batch", "CallLocal/order-processor/orders", 3),
    ("order-processor", "CallLocal/order-processor/orders", 3),
    ("order-processor", "POST /orders", 3),
    ("order-processor", "binding exec", 3),
    ("order-processor", "InvokeBinding", 3),
];

fn count_of(spans: &[SpanView], service: &str, name: &str) -> usize {
    spans
        .iter()
        .filter(|s| s.service == service && s.name.contains(name))
        .count()
}

/// An attribute as text: the query API gives some numbers as strings.
fn tag(span: &SpanView, key: &str) -> String {
    match span.tags.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn find<'a>(spans: &'a [SpanView], service: &str, name: &str) -> Vec<&'a SpanView> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

/// Whether `ancestor` is `span`'s parent, or its parent's, and so on.
fn descends_from(spans: &[SpanView], span: &SpanView, ancestor: &SpanView) -> bool {
    let mut parent = span.parent.clone();
    while let Some(id) = parent {
        if id == ancestor.id {
            return true;
        }
        parent = spans
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.parent.clone());
    }
    false
}

fn describe(spans: &[SpanView]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{}: {} ({}, parent {:?})",
                s.service, s.name, s.id, s.parent
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_run_is_one_trace_from_the_run_to_the_binding_linked_to_its_cron_tick() {
    let jaeger = Jaeger::start().await;
    let mut options = StackOptions::every_second(orders_json(1, 10), 4);
    options.otlp = Some(jaeger.otlp_grpc.clone());
    let stack = Stack::start(options).await;

    // The first run that stored the file: its summary line carries its trace id.
    let mut summary = None;
    for _ in 0..600 {
        summary = stack
            .summaries()
            .into_iter()
            .find(|s| s["outcome"] == "completed" && s["inserted"] == 10);
        if summary.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = summary.expect("a run stores the file within 60 s");
    assert_eq!(stack.stored().await, expected_rows(1, 10));
    let trace_id = summary["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the summary line has no trace_id: {summary}"))
        .to_owned();

    // Spans reach the collector in batches, from four processes: wait until every hop of
    // the three chunks has arrived.
    let mut spans = Vec::new();
    for _ in 0..300 {
        spans = jaeger.trace(&trace_id).await;
        if EXPECTED
            .iter()
            .all(|(service, name, count)| count_of(&spans, service, name) == *count)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = describe(&spans);
    for (service, name, count) in EXPECTED {
        assert_eq!(
            count_of(&spans, service, name),
            count,
            "{service}: {name}\n{all}"
        );
    }

    // The run is the root of its trace, linked to the cron binding's span of its tick
    // (made by batch's sidecar, not by the service: no Rust SDK's span).
    let run = find(&spans, "batch", "run")[0];
    assert_eq!(run.parent, None, "{all}");
    assert_eq!(run.links.len(), 1, "{all}");
    let (tick_trace, tick_span) = &run.links[0];
    assert_ne!(tick_trace, &trace_id, "the tick is a trace of its own");
    let mut tick = Vec::new();
    for _ in 0..300 {
        tick = jaeger.trace(tick_trace).await;
        if tick.iter().any(|s| &s.id == tick_span) && count_of(&tick, "batch", "POST /cron") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let linked = tick
        .iter()
        .find(|s| &s.id == tick_span)
        .expect("the linked span");
    assert!(linked.name.contains("bindings/cron"), "{}", describe(&tick));
    assert_eq!(linked.service, "batch");
    assert_ne!(linked.language, "rust", "{linked:?}");
    let request = find(&tick, "batch", "POST /cron")[0];
    assert_eq!(
        (request.parent.as_ref(), request.language.as_str()),
        (Some(tick_span), "rust")
    );
    assert_eq!(tag(request, "http.route"), "/cron", "{}", describe(&tick));
    // The services' spans are told from the sidecars' by the SDK that made them (the
    // sidecars' carry the same service names, and no SDK language).
    for span in &spans {
        let sidecar = span.name.contains("CallLocal") || span.name.contains("InvokeBinding");
        assert_eq!(span.language == "rust", !sidecar, "{span:?}");
    }
    assert_eq!(
        (
            tag(run, "outcome"),
            tag(run, "orders.read"),
            tag(run, "orders.inserted")
        ),
        ("completed".to_owned(), "10".to_owned(), "10".to_owned()),
        "{all}"
    );

    let chunks = find(&spans, "batch", "chunk");
    let mut sizes: Vec<i64> = chunks
        .iter()
        .map(|c| tag(c, "orders").parse().unwrap())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 4, 4], "{all}");
    for chunk in &chunks {
        assert_eq!(chunk.parent.as_ref(), Some(&run.id), "{all}");
        assert_eq!(tag(chunk, "outcome"), "stored", "{all}");
    }

    // Each request of order-processor descends from one chunk through both sidecars, and
    // daprd's InvokeBinding span from the binding call.
    for request in find(&spans, "order-processor", "POST /orders") {
        let chunk = chunks
            .iter()
            .find(|c| descends_from(&spans, request, c))
            .unwrap_or_else(|| panic!("a request outside every chunk: {all}"));
        let between = spans
            .iter()
            .filter(|s| descends_from(&spans, request, s) && descends_from(&spans, s, chunk))
            .count();
        assert!(
            between >= 2,
            "both sidecars' invocation spans lie between a chunk and its request: {all}"
        );
    }
    for exec in find(&spans, "order-processor", "binding exec") {
        let request = spans
            .iter()
            .find(|s| Some(&s.id) == exec.parent.as_ref())
            .unwrap();
        assert_eq!(request.name, "POST /orders", "{all}");
        let invoke = spans
            .iter()
            .find(|s| s.name.contains("InvokeBinding") && s.parent.as_ref() == Some(&exec.id))
            .unwrap_or_else(|| panic!("no InvokeBinding span under a binding call: {all}"));
        assert_eq!(invoke.service, "order-processor", "{all}");
    }

    // A server span is named after the route it matched, not the path it was called with.
    let traceparent = "00-5f0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c-0101010101010101-01";
    let url = format!(
        "http://127.0.0.1:{}/v1.0/invoke/order-processor/method/orders/3",
        stack.batch.http
    );
    let answer = stack
        .sidecar_client()
        .get(url)
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut read = Vec::new();
    for _ in 0..300 {
        read = jaeger.trace("5f0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c").await;
        if count_of(&read, "order-processor", "GET /orders/{id}") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let get = find(&read, "order-processor", "GET /orders/{id}");
    assert_eq!(get.len(), 1, "{}", describe(&read));
    assert_eq!(
        (tag(get[0], "http.route"), tag(get[0], "url.path")),
        ("/orders/{id}".to_owned(), "/orders/3".to_owned())
    );

    // A log line leads to its trace.
    let op_log = stack.log("order-processor");
    assert!(
        op_log
            .lines()
            .any(|l| l.contains("orders stored") && l.contains(&trace_id)),
        "order-processor's log lines carry the trace id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_collector_down_every_order_is_still_stored() {
    // Nothing listens there: every export fails.
    let mut options = StackOptions::every_second(orders_json(1, 25), 10);
    options.schedule = "@every 1h".to_owned();
    options.otlp = Some(format!("127.0.0.1:{}", free_port()));
    let stack = Stack::start(options).await;

    let summary = stack.run_now().await;
    assert_eq!(summary["outcome"], "completed", "{summary}");
    assert_eq!(summary["inserted"], 25, "{summary}");
    assert_eq!(stack.stored().await, expected_rows(1, 25));
    let again = stack.run_now().await;
    assert_eq!(again["outcome"], "unchanged", "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_also_export_over_http_with_protobuf() {
    let jaeger = Jaeger::start().await;
    let mut options = StackOptions::every_second(orders_json(1, 5), 5);
    options.schedule = "@every 1h".to_owned();
    let endpoint = format!("http://{}", jaeger.otlp_http);
    for env in [&mut options.batch_env, &mut options.order_processor_env] {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()));
        env.push((
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
            "http/protobuf".to_owned(),
        ));
    }
    let stack = Stack::start(options).await;

    let summary = stack.run_now().await;
    assert_eq!(summary["inserted"], 5, "{summary}");
    let logged = stack.summaries().pop().expect("a summary line");
    let trace_id = logged["trace_id"].as_str().expect("a trace id").to_owned();
    let mut spans = Vec::new();
    for _ in 0..300 {
        spans = jaeger.trace(&trace_id).await;
        if !find(&spans, "batch", "run").is_empty()
            && !find(&spans, "order-processor", "binding exec").is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = describe(&spans);
    assert_eq!(find(&spans, "batch", "chunk").len(), 1, "{all}");
    assert_eq!(
        find(&spans, "order-processor", "binding exec").len(),
        1,
        "{all}"
    );
    assert!(
        spans.iter().all(|s| !s.name.contains("InvokeBinding")),
        "the sidecars export nothing here: {all}"
    );
}
