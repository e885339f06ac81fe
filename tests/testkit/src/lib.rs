//! Test support shared by the integration and end-to-end tests: a fresh PostgreSQL
//! database per test (bootstrapped with the project's own `db/bootstrap.sql`, so the
//! service connects as an ordinary role), free ports, and real daprd sidecars with the
//! services as processes. Tests need `TEST_DATABASE_URL` (a superuser URL) and, for
//! end-to-end tests, a daprd, and for the trace test Jaeger (`JAEGER`);
//! `scripts/test.sh` provides all three.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod azure;
pub mod jaeger;
pub mod pg;
pub mod process;
pub mod stack;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}
