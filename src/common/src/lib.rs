//! What both services share: logging and tracing set-up, W3C trace context, the shutdown
//! signal, configuration from the environment, the order model with its validation, the orders'
//! wire formats, and a small client for the Dapr sidecar's HTTP API. Nothing service-specific lives here.

pub mod config;
pub mod dapr;
pub mod order;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;
pub mod wire;
