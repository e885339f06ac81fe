//! Azure's first deployment, in the order things happen there, against a server set up
//! like Azure's (PostgreSQL 17, a non-superuser Entra administrator, Azure's principal
//! function): the apps and their sidecars may start before the bootstrap has created the
//! app's role and database (the first `azd provision`; a revision that starts in any other
//! order), or after it (`azd deploy`, whose postpublish hook runs the bootstrap before the
//! revision, and a re-provision after a failed deploy). Either way every order is stored
//! exactly once, and no process needs a hand: at most one supervised restart of
//! order-processor's sidecar, which Container Apps does by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::azure::{AzureLikeServer, PrincipalFunction};
use testkit::stack::{Database, Stack, StackOptions, binaries, expected_rows, orders_json};

const ROLE: &str = "id-orders-data";
const OBJECT_ID: &str = "6f1d2c3b-4a59-4e7d-9c8b-1a2b3c4d5e6f";
const DATABASE: &str = "orders";
const ORDERS: i64 = 300;
/// How long the system may take to converge once the bootstrap has run.
const CONVERGE: Duration = Duration::from_secs(90);

/// The app's database on the server, as the app and the checks reach it.
fn database(server: &AzureLikeServer) -> Database {
    Database::new(
        server.principal_url(ROLE, OBJECT_ID, DATABASE),
        server.superuser_url(DATABASE),
    )
}

/// The stack as deployed: order-processor keeps retrying its database for 15 minutes.
fn options() -> StackOptions {
    let mut options = StackOptions::every_second(orders_json(1, ORDERS), 50);
    options
        .order_processor_env
        .push(("DB_STARTUP_TIMEOUT_SECS".to_owned(), "900".to_owned()));
    options
}

/// Runs `order-processor bootstrap` as the Entra administrator, as the Container Apps job
/// does (there with the administrator's managed identity, here with its password).
async fn bootstrap(server: &AzureLikeServer) {
    let output = tokio::process::Command::new(binaries(false).join("order-processor"))
        .arg("bootstrap")
        .env("DATABASE_ADMIN_URL", server.admin_url("postgres"))
        .env("DB_NAME", DATABASE)
        .env("APP_ROLE", ROLE)
        .env("APP_ROLE_OBJECT_ID", OBJECT_ID)
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run order-processor bootstrap");
    assert!(
        output.status.success(),
        "bootstrap failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn every_order_stored_once(stack: &Stack) {
    stack
        .wait_until("every order stored", CONVERGE, || async {
            stack.stored().await.len() == usize::try_from(ORDERS).unwrap()
        })
        .await;
    assert_eq!(stack.stored().await, expected_rows(1, ORDERS));
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_started_before_the_bootstrap_store_every_order_once_it_has_run() {
    let server = AzureLikeServer::start(PrincipalFunction::SecurityDefiner).await;
    let mut stack = Stack::start_unready(options(), database(&server)).await;

    // As after the first provision: the sidecar could not sign in, so it runs without the
    // binding instead of crash-looping, and order-processor is not ready.
    stack
        .wait_until(
            "the sidecar to start without its binding",
            CONVERGE,
            || async {
                stack
                    .log("order-processor-daprd")
                    .contains("Ignoring error processing component")
            },
        )
        .await;
    let (status, body) = stack.readiness("order-processor").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["binding"], &body["schema"]),
        (&"unavailable".into(), &"migrating".into())
    );
    let apps = (stack.pid("order-processor"), stack.pid("batch"));

    bootstrap(&server).await;
    every_order_stored_once(&stack).await;
    stack.wait_ready("order-processor").await;

    assert_eq!(
        stack.sidecar_restarts("order-processor"),
        1,
        "one supervised restart"
    );
    assert_eq!(stack.sidecar_restarts("batch"), 0);
    assert_eq!(
        (stack.pid("order-processor"), stack.pid("batch")),
        apps,
        "neither app was restarted"
    );
    assert!(
        stack
            .log("order-processor")
            .contains("restarting the sidecar"),
        "order-processor says why it restarted its sidecar"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_started_after_the_bootstrap_need_no_restart() {
    let server = AzureLikeServer::start(PrincipalFunction::SecurityInvoker).await;
    bootstrap(&server).await;
    let stack = Stack::start_on(options(), database(&server)).await;
    every_order_stored_once(&stack).await;
    assert_eq!(stack.sidecar_restarts("order-processor"), 0);
    assert_eq!(stack.sidecar_restarts("batch"), 0);
}
