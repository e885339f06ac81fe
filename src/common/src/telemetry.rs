//! Logging set-up: readable lines on a terminal, one JSON object per line everywhere else
//! (containers, CI, log collectors). The filter comes from `RUST_LOG` and defaults to `info`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global `tracing` subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::io::stdout().is_terminal() {
        registry.with(fmt::layer()).init();
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .init();
    }
}
