//! Azure's first deployment, in the order things happen there, in Azure mode: a server set
//! up like Azure's (PostgreSQL 17, a non-superuser Entra administrator, Azure's principal
//! function) that takes tokens over TLS only, a stand-in of the managed identity endpoint,
//! and order-processor, its sidecar and the bootstrap started with the environment infra/
//! gives them (testkit's `azure_mode`). The apps and their sidecars may start before the
//! bootstrap has created the app's role and database (the first `azd provision`; a
//! revision that starts in any other order), or after it (`azd deploy`, whose postpublish
//! hook runs the bootstrap before the revision, and a re-provision after a failed deploy).
//! Either way every order is stored exactly once, and no process needs a hand: at most one
//! supervised restart of order-processor's sidecar, which Container Apps does by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::azure::PrincipalFunction;
use testkit::azure_mode::{APP, AzureMode, AzureOptions, JOB, SIDECAR};
use testkit::identity::Answer;
use testkit::stack::{Stack, StackOptions, expected_rows, orders_json};

const ORDERS: i64 = 300;
/// How long the system may take to converge once the bootstrap has run.
const CONVERGE: Duration = Duration::from_secs(90);

async fn azure(mode: PrincipalFunction) -> AzureMode {
    AzureMode::start(AzureOptions {
        mode,
        ..AzureOptions::default()
    })
    .await
}

/// The cron every second; order-processor keeps retrying its database for as long as
/// infra/ tells it to (`DB_STARTUP_TIMEOUT_SECS`).
fn options() -> StackOptions {
    StackOptions::every_second(orders_json(1, ORDERS), 50)
}

async fn every_order_stored_once(stack: &Stack) {
    stack
        .wait_until("every order stored", CONVERGE, || async {
            stack.stored().await.len() == usize::try_from(ORDERS).unwrap()
        })
        .await;
    assert_eq!(stack.stored().await, expected_rows(1, ORDERS));
}

/// Every process signed in as in Azure: each asked the identity endpoint for its own
/// identity's token and got it, and every login of the app's role was over TLS.
fn signed_in_with_tokens(azure: &AzureMode) {
    let requests = azure.identity.requests();
    for (caller, identity) in [
        (APP, &azure.data),
        (SIDECAR, &azure.data),
        (JOB, &azure.admin),
    ] {
        let theirs: Vec<_> = requests
            .iter()
            .filter(|r| r.caller.as_deref() == Some(caller))
            .collect();
        assert!(!theirs.is_empty(), "{caller} asked for no token");
        for request in theirs {
            assert_eq!(
                request.client_id.as_deref(),
                Some(identity.client_id.as_str()),
                "{caller}"
            );
            assert!(
                matches!(&request.answer, Answer::Token { identity: name, .. } if *name == identity.name),
                "{caller}: {request:?}"
            );
        }
    }
    let log = azure.server.server().log();
    let logins: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("connection authorized: user={}", azure.data.name)))
        .collect();
    assert!(
        logins.len() >= 2,
        "the app and its sidecar signed in:\n{log}"
    );
    for login in logins {
        assert!(login.contains("SSL enabled"), "{login}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_started_before_the_bootstrap_store_every_order_once_it_has_run() {
    let azure = azure(PrincipalFunction::SecurityDefiner).await;
    let mut stack = Stack::start_unready(options(), azure.database(azure.platform())).await;

    // As after the first provision: the sidecar could not sign in, so it runs without the
    // binding instead of crash-looping, and order-processor is not ready.
    stack
        .wait_until(
            "the sidecar to start without its binding",
            CONVERGE,
            || async {
                stack
                    .log(SIDECAR)
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

    azure.bootstrap().await;
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
    signed_in_with_tokens(&azure);
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_started_after_the_bootstrap_need_no_restart() {
    let azure = azure(PrincipalFunction::SecurityInvoker).await;
    azure.bootstrap().await;
    let stack = Stack::start_on(options(), azure.database(azure.platform())).await;
    every_order_stored_once(&stack).await;
    assert_eq!(stack.sidecar_restarts("order-processor"), 0);
    assert_eq!(stack.sidecar_restarts("batch"), 0);
    signed_in_with_tokens(&azure);

    // The binding's first sign-in (token, TLS, login, ping) fits its initTimeout, which
    // leaves room for what Azure adds (docs/azure.md).
    let took = azure
        .binding_sign_in(&stack)
        .expect("the sidecar loaded the binding");
    eprintln!(
        "the binding's first sign-in took {} ms, {} ms of it the token request (initTimeout {} s)",
        took.total.as_millis(),
        took.token.as_millis(),
        azure.init_timeout().as_secs()
    );
    assert!(took.total < azure.init_timeout(), "{took:?}");
}
