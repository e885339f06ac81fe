//! Test support shared by the integration and end-to-end tests: a fresh PostgreSQL
//! database per test (bootstrapped with the project's own `db/bootstrap.sql`, so the
//! service connects as an ordinary role), free ports, and real daprd sidecars with the
//! services as processes; and Azure mode ([`azure_mode`]), in which everything signs in to
//! PostgreSQL with tokens over verified TLS, as a deployment does. Tests need
//! `TEST_DATABASE_URL` (a superuser URL) and, for end-to-end tests, a daprd (`DAPRD`); the
//! tests that start servers of their own the PostgreSQL 17 binaries (`PG_BINDIR`), the trace
//! tests Jaeger (`JAEGER`), and Azure mode a Python with the checkers' packages (`PYTHON`,
//! which reads infra/). `scripts/test.sh` provides them all, `scripts/test-env.sh` prints
//! them for a single test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod azure;
pub mod azure_mode;
pub mod identity;
pub mod infra;
pub mod jaeger;
pub mod pg;
pub mod process;
pub mod stack;
pub mod tls;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}
