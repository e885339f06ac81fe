//! Signing in as Azure does, at home (testkit's `azure_mode`): order-processor, its sidecar
//! and the bootstrap take tokens from a stand-in of Container Apps' managed identity
//! endpoint and present them to a PostgreSQL that takes tokens over verified TLS only,
//! each started with the environment infra/ gives it. Tokens expire and change, and orders
//! are still stored; a token the endpoint did not issue, or one that expired, is refused;
//! so is a token of another identity, and a server whose certificate names another host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use sqlx::Connection;
use testkit::azure_mode::{APP, AzureMode, AzureOptions, HOST, SIDECAR};
use testkit::identity::{API_VERSION, Answer, Identity, RESOURCE};
use testkit::stack::{Platform, Stack, StackOptions, expected_rows, orders_json};

/// How long anything here may take to happen.
const PATIENCE: Duration = Duration::from_secs(90);

/// Runs are triggered by the test (or orders posted), never by a tick.
fn on_demand(orders: String) -> StackOptions {
    StackOptions {
        schedule: "@every 1h".to_owned(),
        ..StackOptions::every_second(orders, 20)
    }
}

/// Asks the endpoint for `client_id`'s token as a container with `env` would.
async fn ask(env: &[(String, String)], client_id: Option<&str>) -> reqwest::Response {
    let value = |name: &str| {
        env.iter()
            .find_map(|(k, v)| (k == name).then_some(v.clone()))
            .unwrap()
    };
    let mut query = vec![("api-version", API_VERSION), ("resource", RESOURCE)];
    if let Some(id) = client_id {
        query.push(("client_id", id));
    }
    get(
        &value("IDENTITY_ENDPOINT"),
        &value("IDENTITY_HEADER"),
        &query,
    )
    .await
}

async fn get(endpoint: &str, header: &str, query: &[(&str, &str)]) -> reqwest::Response {
    let url = url::Url::parse_with_params(endpoint, query).unwrap();
    reqwest::Client::new()
        .get(url)
        .header("X-IDENTITY-HEADER", header)
        .send()
        .await
        .unwrap()
}

async fn token_of(azure: &AzureMode, identity: &Identity) -> String {
    let env = azure.identity.caller("the test", &[identity]);
    let response = ask(&env, Some(&identity.client_id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn is_refused(result: Result<sqlx::PgConnection, sqlx::Error>) -> bool {
    match result {
        Err(sqlx::Error::Database(error)) => error.code().as_deref() == Some("28P01"),
        _ => false,
    }
}

/// `platform` with order-processor and its binding signing in as `identity`.
fn signing_in_as(azure: &AzureMode, mut platform: Platform, identity: &Identity) -> Platform {
    for (name, value) in &mut platform.order_processor_env {
        if name == "AZURE_CLIENT_ID" {
            value.clone_from(&identity.client_id);
        }
    }
    let mut component = azure.sqldb_component();
    for item in component["spec"]["metadata"].as_array_mut().unwrap() {
        if item["name"] == "azureClientId" {
            item["value"] = identity.client_id.clone().into();
        }
    }
    platform.components = vec![(
        "sqldb.yaml".to_owned(),
        serde_json::to_string_pretty(&component).unwrap(),
    )];
    platform
}

/// Orders `first..first + count` as a request body.
fn orders(first: i64, count: i64) -> Value {
    let file: Value = serde_json::from_str(&orders_json(first, count)).unwrap();
    file["orders"].clone()
}

/// Posts orders through both sidecars until they are accepted.
async fn store(stack: &Stack, first: i64, count: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = stack.post_orders(&orders(first, count)).await;
        if response.status() == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orders {first}.. not accepted: {} {}",
            response.status(),
            response.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The backends of `role` that started after `since` (the server's clock), by
/// application name.
async fn logins_since(stack: &Stack, role: &str, since: f64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_activity
         WHERE usename = $1 AND extract(epoch FROM backend_start) > $2",
    )
    .bind(role)
    .bind(since)
    .fetch_all(&mut stack.admin().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_identity_endpoint_answers_as_container_apps_does_and_refuses_the_rest() {
    let azure = AzureMode::start(AzureOptions::default()).await;
    let env = azure.identity.caller("the test", &[&azure.data]);

    // The fields azure_identity requires, expires_on as epoch seconds in a string.
    let response = ask(&env, Some(&azure.data.client_id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], RESOURCE);
    let expires: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 25..=now + 31).contains(&expires),
        "{expires} vs {now}"
    );
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "shaped like a JWT");
    // The same token until half of its lifetime has passed.
    let again: Value = ask(&env, Some(&azure.data.client_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["access_token"], token.as_str());

    // What Container Apps refuses: an identity the container does not hold, none at all
    // (there is no system-assigned identity), a header that is not the container's, a
    // scope other than PostgreSQL's, another protocol version.
    assert_eq!(ask(&env, Some(&azure.admin.client_id)).await.status(), 400);
    assert_eq!(ask(&env, None).await.status(), 400);
    let stranger = [
        env[0].clone(),
        ("IDENTITY_HEADER".to_owned(), "not-this-one".to_owned()),
    ];
    assert_eq!(
        ask(&stranger, Some(&azure.data.client_id)).await.status(),
        401
    );
    for (version, resource) in [
        (API_VERSION, "https://vault.azure.net"),
        (API_VERSION, &format!("{RESOURCE}/.default")),
        ("2018-02-01", RESOURCE),
    ] {
        let query = [
            ("api-version", version),
            ("resource", resource),
            ("client_id", &azure.data.client_id),
        ];
        let status = get(&env[0].1, &env[1].1, &query).await.status();
        assert_eq!(status, 400, "{version} {resource}");
    }

    // Every request is recorded, with its answer.
    let requests = azure.identity.requests();
    assert_eq!(requests.len(), 8);
    assert_eq!(
        requests[0].answer,
        Answer::Token {
            identity: azure.data.name.clone(),
            generation: 1
        }
    );
    assert_eq!(requests[1].answer, requests[0].answer);
    assert!(
        requests[2..]
            .iter()
            .all(|r| matches!(r.answer, Answer::Refused { .. })),
        "{requests:?}"
    );
    assert_eq!(requests[4].caller, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_stored_across_token_changes() {
    let azure = AzureMode::start(AzureOptions::default()).await;
    azure.bootstrap().await;
    let stack = Stack::start_on(
        on_demand(orders_json(1, 1)),
        azure.database(azure.platform()),
    )
    .await;
    store(&stack, 1, 20).await;

    let mut generation = azure
        .identity
        .tokens(&azure.data)
        .last()
        .unwrap()
        .generation;
    let mut next = 21;
    for change in 1..=2 {
        // order-processor renews its token as its renewal allows (every 10 s for tokens
        // that live less than its margin); a new one is issued once half of the current
        // one's life has passed, and becomes the role's password.
        stack
            .wait_until("a new token for the app's identity", PATIENCE, || async {
                azure
                    .identity
                    .tokens(&azure.data)
                    .last()
                    .unwrap()
                    .generation
                    > generation
            })
            .await;
        generation = azure
            .identity
            .tokens(&azure.data)
            .last()
            .unwrap()
            .generation;
        stack
            .wait_until("order-processor to hold the new token", PATIENCE, || async {
                azure.identity.requests().iter().any(|r| {
                    r.caller.as_deref() == Some(APP)
                        && matches!(r.answer, Answer::Token { generation: g, .. } if g >= generation)
                })
            })
            .await;

        // Every connection of the app's role is closed: the app and its sidecar must sign
        // in again, with the new token.
        let mut admin = stack.admin().await;
        let cut: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&azure.data.name)
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();

        store(&stack, next, 20).await;
        next += 20;
        assert_eq!(
            stack.stored().await,
            expected_rows(1, next - 1),
            "change {change}"
        );
        stack
            .wait_until("order-processor's own sign-in", PATIENCE, || async {
                stack
                    .readiness("order-processor")
                    .await
                    .is_some_and(|(status, _)| status == 200)
                    && logins_since(&stack, &azure.data.name, cut)
                        .await
                        .iter()
                        .any(|name| name == "order-processor")
            })
            .await;
        let logins = logins_since(&stack, &azure.data.name, cut).await;
        assert!(
            logins.iter().any(|name| name != "order-processor"),
            "the sidecar signed in again: {logins:?}"
        );
    }
    assert!(generation >= 3, "two changes: {generation}");
    assert!(
        stack
            .log("order-processor")
            .contains("database token renewed"),
        "order-processor renewed its token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_the_endpoint_did_not_issue_or_that_has_expired_is_refused() {
    let azure = AzureMode::start(AzureOptions {
        token_lifetime: Duration::from_secs(6),
        ..AzureOptions::default()
    })
    .await;
    azure.bootstrap().await;
    let token = token_of(&azure, &azure.data).await;
    let expires_at = azure
        .identity
        .tokens(&azure.data)
        .last()
        .unwrap()
        .expires_at;

    // The token the endpoint issued signs in (over TLS, the certificate verified).
    let conn = azure.sign_in(&azure.data, &token).await.expect("signed in");
    conn.close().await.unwrap();

    // One it did not issue does not, though it looks the same: another signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other_signature = "c2lnbmVkIGJ5IG5vYm9keQ".repeat(10);
    parts[2] = &other_signature;
    assert!(is_refused(
        azure.sign_in(&azure.data, &parts.join(".")).await
    ));
    let conn = azure
        .sign_in(&azure.data, &token)
        .await
        .expect("still valid");
    conn.close().await.unwrap();

    // Nor does the issued one once it has expired (nobody asked for a new one).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let result = azure.sign_in(&azure.data, &token).await;
        if is_refused(result) {
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        SystemTime::now() >= expires_at,
        "refused only once it expired"
    );
    let log = azure.server.server().log();
    assert!(
        log.contains(&format!(
            "User \"{}\" has an expired password",
            azure.data.name
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_of_another_identity_is_refused() {
    let azure = AzureMode::start(AzureOptions::default()).await;
    azure.bootstrap().await;

    // Each role takes its own identity's token only.
    let admin_token = token_of(&azure, &azure.admin).await;
    let data_token = token_of(&azure, &azure.data).await;
    assert!(is_refused(azure.sign_in(&azure.data, &admin_token).await));
    assert!(is_refused(azure.sign_in(&azure.admin, &data_token).await));

    // order-processor's container holds a second identity, and the app's settings and its
    // binding's azureClientId name that one: the endpoint gives both its tokens, and the
    // server refuses them as the app's role.
    let platform = signing_in_as(
        &azure,
        azure.platform_holding(&[&azure.other]),
        &azure.other,
    );
    let stack = Stack::start_unready(on_demand(orders_json(1, 1)), azure.database(platform)).await;
    stack
        .wait_until("both refused", PATIENCE, || async {
            stack
                .log(SIDECAR)
                .contains("Ignoring error processing component")
                && stack
                    .log("order-processor")
                    .contains("password authentication failed")
        })
        .await;
    for caller in [APP, SIDECAR] {
        let answers: Vec<Answer> = azure
            .identity
            .requests()
            .into_iter()
            .filter(|r| r.caller.as_deref() == Some(caller))
            .map(|r| r.answer)
            .collect();
        assert!(!answers.is_empty(), "{caller}");
        assert!(
            answers.iter().all(
                |a| matches!(a, Answer::Token { identity, .. } if *identity == azure.other.name)
            ),
            "{caller}: {answers:?}"
        );
    }
    assert!(
        stack
            .log(SIDECAR)
            .contains("password authentication failed"),
        "{}",
        stack.log(SIDECAR)
    );
    let log = azure.server.server().log();
    assert!(!log.contains(&format!("connection authorized: user={}", azure.data.name)));
    let (status, body) = stack.readiness("order-processor").await.unwrap();
    assert_eq!((status, &body["binding"]), (503, &"unavailable".into()));
    assert!(stack.stored().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_for_another_host_name_is_refused_by_the_app_and_the_sidecar() {
    let elsewhere = "db.elsewhere.example";
    let azure = AzureMode::start(AzureOptions {
        certificate_host: elsewhere.to_owned(),
        ..AzureOptions::default()
    })
    .await;
    let mut stack = Stack::start_unready(
        on_demand(orders_json(1, 1)),
        azure.database(azure.platform()),
    )
    .await;
    stack
        .wait_until("the sidecar without its binding", PATIENCE, || async {
            stack
                .log(SIDECAR)
                .contains("Ignoring error processing component")
        })
        .await;
    let sidecar = stack.log(SIDECAR);
    assert!(
        sidecar.contains(&format!("certificate is valid for {elsewhere}, not {HOST}")),
        "{sidecar}"
    );
    stack
        .wait_until("order-processor's refusal", PATIENCE, || async {
            stack.log("order-processor").contains("not valid for name")
        })
        .await;
    // The bootstrap job too (it would keep retrying for DB_STARTUP_TIMEOUT_SECS).
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut job = azure
        .bootstrap_command()
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    stack
        .wait_until("the bootstrap's refusal", PATIENCE, || async {
            std::fs::read_to_string(log.path())
                .unwrap()
                .contains("not valid for name")
        })
        .await;
    job.kill().await.unwrap();
    // They asked for tokens, and never signed in: the certificate stopped them first.
    for caller in [APP, SIDECAR] {
        assert!(
            azure
                .identity
                .requests()
                .iter()
                .any(|r| r.caller.as_deref() == Some(caller)),
            "{caller}"
        );
    }
    assert!(
        !azure
            .server
            .server()
            .log()
            .contains("connection authorized: user=id-")
    );

    // With a certificate for the right name, and nothing else changed, the system
    // converges by itself.
    azure.use_a_certificate_for_the_host().await;
    azure.bootstrap().await;
    stack.wait_ready("order-processor").await;
    store(&stack, 1, 10).await;
    assert_eq!(stack.stored().await, expected_rows(1, 10));
}
