//! Logs and traces through `tracing`. Logs are readable lines on a terminal and one JSON
//! object per line elsewhere (containers, CI, log collectors), with the `trace_id` and
//! `span_id` of the span they were written in; the filter comes from `RUST_LOG` and
//! defaults to `info` and applies to the logs only. Spans are OpenTelemetry spans (see
//! [`crate::trace_context`] for how they join the caller's trace), made whatever the log
//! level; they are exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is
//! set, in batches from a thread of their own: a collector that is slow or down costs spans,
//! never a request or a run.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};

/// The variables of logs and traces, which both services read, one per line:
/// `NAME | default | meaning`.
pub const SETTINGS: &str = "
RUST_LOG | info | log filter (of the logs only: the spans are made whatever it says, so the trace holds at any log level); logs are JSON unless stdout is a terminal, with the `trace_id` and `span_id` of the span each line was written in
OTEL_EXPORTER_OTLP_ENDPOINT | | export spans over OTLP to this collector (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` first); unset, nothing is exported and the start-up log says so
OTEL_EXPORTER_OTLP_PROTOCOL | grpc | `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` first); anything else stops the service at start-up
OTEL_TRACES_SAMPLER | parentbased_always_on | which traces are kept; a batch run is a root, so this decides which runs are traced (`parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.1`: one in ten)
OTEL_SERVICE_NAME | | the service's name in traces (unset: `batch` or `order-processor`); the other standard `OTEL_*` variables of the exporter and the batch processor apply (`OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_SDK_DISABLED`, ...)
";
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self as tfmt, FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, prelude::*};

use crate::config::{ConfigError, Vars};

/// How long exporting the last spans may hold up the exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The OTLP transports the services speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    HttpProtobuf,
}

impl ExportProtocol {
    /// How spans are exported, from the standard OpenTelemetry variables: `None` when no
    /// endpoint is set or `OTEL_SDK_DISABLED=true`; `grpc` when no protocol is named (what
    /// Container Apps' managed agent speaks); an error naming the variable when the
    /// protocol is one the services do not speak.
    pub fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let set = |var: &str| -> Result<Option<String>, ConfigError> {
            Ok(vars.optional(var)?.filter(|v| !v.trim().is_empty()))
        };
        if set("OTEL_SDK_DISABLED")?.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?.is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT")?.is_none()
        {
            return Ok(None);
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = set(var)? {
                return match value.trim() {
                    "grpc" => Ok(Some(Self::Grpc)),
                    "http/protobuf" => Ok(Some(Self::HttpProtobuf)),
                    other => Err(ConfigError::new(
                        var,
                        format!("must be grpc or http/protobuf, got {other:?}"),
                    )),
                };
            }
        }
        Ok(Some(Self::Grpc))
    }
}

/// The installed telemetry; dropping it exports the spans not yet sent (for at most 2 s).
#[must_use = "dropping it at once would stop the export of spans"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Nothing to do with a failure here: the collector is gone, the process ends.
        let _ = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT);
    }
}

/// Installs the global `tracing` subscriber for `service` (its `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise). Call once, first thing in `main`, inside the tokio
/// runtime (the gRPC exporter's connection lives on it).
pub fn init(service: &'static str) -> Result<Telemetry, ConfigError> {
    let export = ExportProtocol::from_vars(&Vars::from_env())?;
    let provider = provider(service, export)?;
    let tracer = provider.tracer(service);
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let slot = DispatchSlot::default();
    // RUST_LOG filters the logs only: the spans are made whatever it says, or a quieter
    // log level would break the trace between the services.
    let registry = tracing_subscriber::registry()
        .with(spans(tracer))
        .with(slot.clone());
    if std::io::stdout().is_terminal() {
        registry.with(tfmt::layer().with_filter(logs)).init();
    } else {
        registry
            .with(json_layer(slot, std::io::stdout).with_filter(logs))
            .init();
    }
    let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let sampler = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".to_owned());
    match export {
        Some(protocol) => {
            let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
            tracing::info!(?protocol, endpoint, sampler, "exporting traces over OTLP");
        }
        None => tracing::info!(
            "traces are not exported: OTEL_EXPORTER_OTLP_ENDPOINT is not set (or OTEL_SDK_DISABLED=true)"
        ),
    }
    Ok(Telemetry { provider })
}

fn provider(
    service: &'static str,
    export: Option<ExportProtocol>,
) -> Result<SdkTracerProvider, ConfigError> {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let Some(protocol) = export else {
        return Ok(builder.build());
    };
    let built = match protocol {
        ExportProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(Protocol::Grpc)
            .build(),
        ExportProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
    };
    let exporter = built.map_err(|error| {
        ConfigError::new(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("cannot export to it: {error}"),
        )
    })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The OpenTelemetry layer: the services' spans (all at `info`), not the libraries' debug
/// and trace spans.
fn spans<S>(tracer: opentelemetry_sdk::trace::SdkTracer) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO)
}

/// One JSON object per line, the event's fields at the top, with the ids of its trace.
fn json_layer<S, W>(slot: DispatchSlot, writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let json = tfmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false);
    tfmt::layer()
        .event_format(WithTraceIds { inner: json, slot })
        .fmt_fields(tfmt::format::JsonFields::new())
        .with_writer(writer)
}

/// Remembers the dispatcher the subscriber was installed in, for [`WithTraceIds`]: the
/// OpenTelemetry context of a span is found through it.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// Puts `"trace_id"` and `"span_id"` first in each JSON line written in a span.
struct WithTraceIds<F> {
    inner: F,
    slot: DispatchSlot,
}

impl<F> WithTraceIds<F> {
    /// The trace of the span `event` was written in. Found through the dispatcher, not
    /// the formatter's context, which hides the spans this layer's filter does not enable
    /// (all of them at `RUST_LOG=warn`).
    fn span_context(&self, event: &Event<'_>) -> Option<SpanContext> {
        let dispatch = self.slot.0.get()?.upgrade()?;
        let id = match event.parent() {
            Some(id) => id.clone(),
            None if event.is_contextual() => dispatch.current_span().id()?.clone(),
            None => return None,
        };
        let context = tracing_opentelemetry::get_otel_context(&id, &dispatch)?;
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(span_context)
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = self.span_context(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                r#"{{"trace_id":"{}","span_id":"{}",{rest}"#,
                ids.trace_id(),
                ids.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(pairs: &[(&str, &str)]) -> Result<Option<ExportProtocol>, ConfigError> {
        ExportProtocol::from_vars(&Vars::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(export(&[]).unwrap(), None);
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            None
        );
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(),
            None
        );
    }

    #[test]
    fn grpc_is_the_protocol_unless_one_is_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(export(&[endpoint]).unwrap().unwrap(), ExportProtocol::Grpc);
        assert_eq!(
            export(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .unwrap()
                .unwrap(),
            ExportProtocol::HttpProtobuf
        );
        assert_eq!(
            export(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4318/v1/traces"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ])
            .unwrap()
            .unwrap(),
            ExportProtocol::HttpProtobuf,
            "the traces' own variable comes first"
        );
    }

    #[test]
    fn a_protocol_the_services_do_not_speak_is_refused_by_name() {
        let error = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
        assert!(error.contains("http/json"), "{error}");
    }

    #[test]
    fn the_sdk_can_be_switched_off() {
        assert_eq!(
            export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ])
            .unwrap(),
            None
        );
    }

    /// A log that tests can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_written_in_a_span_carry_its_trace_and_span_id() {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let slot = DispatchSlot::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(slot.clone())
            .with(json_layer(slot, move || writer.clone()));
        let trace = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "outside");
            let span = tracing::info_span!("run");
            span.in_scope(|| tracing::info!(n = 2, "inside"));
            crate::trace_context::trace_id(&span).unwrap()
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{log}");
        assert_eq!(
            (&lines[1]["message"], &lines[1]["n"]),
            (&"inside".into(), &2.into())
        );
        assert_eq!(lines[1]["trace_id"], trace.as_str(), "{log}");
        assert_eq!(lines[1]["span_id"].as_str().unwrap().len(), 16, "{log}");
    }

    #[test]
    fn a_quiet_log_level_still_passes_the_trace_on() {
        use crate::trace_context::{set_parent, trace_headers};
        use axum::http::HeaderMap;

        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let slot = DispatchSlot::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(spans(provider.tracer("test")))
            .with(slot.clone())
            .with(json_layer(slot, move || writer.clone()).with_filter(EnvFilter::new("warn")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = HeaderMap::new();
            headers.insert(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                    .parse()
                    .unwrap(),
            );
            let span = tracing::info_span!("request");
            set_parent(&span, &headers);
            let child = span.in_scope(|| tracing::info_span!("call"));
            let headers = trace_headers(&child);
            let sent = &headers.first().expect("a traceparent at RUST_LOG=warn").1;
            assert!(
                sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{sent}"
            );
            child.in_scope(|| {
                tracing::info!("not logged");
                tracing::warn!("logged");
            });
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.contains(r#""trace_id":"0af7651916cd43dd8448eb211c80319c""#),
            "{log}"
        );
    }
}
