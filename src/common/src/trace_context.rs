//! W3C trace context in and out: a span joins the trace of the request that came in
//! ([`set_parent`], [`http_span`] for axum's requests through `tower_http`) and passes it
//! on to the calls it makes ([`traceparent`]). How the spans are exported, and the logs
//! that carry their ids, are [`crate::telemetry`]'s.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Request, Response};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The context of the caller's span from the W3C `traceparent` (and `tracestate`) in
/// `headers`, when there is a valid one.
pub fn remote_parent(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    let parent = TraceContextPropagator::new().extract(&carrier);
    parent.span().span_context().is_valid().then_some(parent)
}

/// A caller's span, which a span of another trace can be linked to.
#[derive(Debug, Clone)]
pub struct Link(opentelemetry::trace::SpanContext);

/// The caller's span from the W3C headers in `headers`, when there is a valid one, to link
/// a span of a trace of its own to ([`link`]).
pub fn caller(headers: &HeaderMap) -> Option<Link> {
    remote_parent(headers).map(|parent| Link(parent.span().span_context().clone()))
}

/// Links `span` to `to`: it follows from it, in a trace of its own.
pub fn link(span: &Span, to: Link) {
    span.add_link(to.0);
}

/// Makes `span` a child of the caller's span ([`remote_parent`]), when there is one. Call
/// before anything is logged in the span.
pub fn set_parent(span: &Span, headers: &HeaderMap) {
    if let Some(parent) = remote_parent(headers) {
        // The only failure is a span that is already disabled: nothing to trace.
        let _ = span.set_parent(parent);
    }
}

/// The W3C headers that pass `span`'s trace on to a call it makes: `traceparent`, and
/// `tracestate` when it has one (W3C requires passing it on). None when it is disabled.
pub fn trace_headers(span: &Span) -> Vec<(&'static str, String)> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| Some((name, carrier.remove(name).filter(|v| !v.is_empty())?)))
        .collect()
}

/// The hex trace id of `span`, when it has one.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The server span of an HTTP request, child of the caller's `traceparent` (for
/// `tower_http`'s `TraceLayer::make_span_with`), named `{method} {route}` after the route
/// it matched (`GET /orders/{id}`, not every id its own name). Health checks get none:
/// probes every few seconds would bury the traces that matter.
pub fn http_span<B>(request: &Request<B>) -> Span {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return Span::none();
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {}", request.method(), route.unwrap_or(path)),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    set_parent(&span, request.headers());
    span
}

/// Records the status of an HTTP response on its [`http_span`] (for `TraceLayer::on_response`).
pub fn record_response<B>(response: &Response<B>, _latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// `router` with a span for every request ([`http_span`]) that records its status
/// ([`record_response`]). Failures are logged where they happen, with their cause, not here.
pub fn traced<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(http_span)
            .on_response(record_response)
            .on_failure(()),
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// Runs `test` with spans that are OpenTelemetry spans.
    fn traced(test: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, test);
    }

    fn with_traceparent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        headers
    }

    fn sent(span: &Span, name: &str) -> Option<String> {
        let headers = trace_headers(span);
        headers
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_valid_traceparent_becomes_the_parent_and_travels_on_with_its_tracestate() {
        traced(|| {
            let mut headers =
                with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
            headers.insert("tracestate", "dapr=1,az=x".parse().unwrap());
            let span = tracing::info_span!("request");
            set_parent(&span, &headers);
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let child = span.in_scope(|| tracing::info_span!("call"));
            assert_eq!(sent(&child, "tracestate").as_deref(), Some("dapr=1,az=x"));
            let sent = sent(&child, "traceparent").unwrap();
            assert!(
                sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{sent}"
            );
            assert!(
                !sent.contains("b7ad6b7169203331"),
                "a span of its own: {sent}"
            );
        });
    }

    #[test]
    fn without_a_tracestate_none_is_sent() {
        traced(|| {
            let headers =
                with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
            let span = tracing::info_span!("request");
            set_parent(&span, &headers);
            let names: Vec<&str> = trace_headers(&span).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["traceparent"]);
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        traced(|| {
            let span = tracing::info_span!("request");
            set_parent(&span, &with_traceparent("00-zz-b7ad6b7169203331-01"));
            let id = trace_id(&span).unwrap();
            assert_eq!(id.len(), 32);
            assert_ne!(id, "00000000000000000000000000000000");
        });
    }
}
