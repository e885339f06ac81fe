//! Azure mode: everything signs in to PostgreSQL the way a deployment does. The server is
//! set up like Azure's and takes tokens over TLS only ([`AzureLikeServer::start_entra`]),
//! with a certificate of the test's own CA for `localhost`; a stand-in of the managed
//! identity endpoint issues the tokens ([`IdentityEndpoint`]). order-processor, its
//! sidecar and the bootstrap get the environment infra/ gives them, read out of the Bicep
//! ([`InfraEnv`]): the apps' and the job's variables, and the sidecar's PostgreSQL binding
//! as dapr-components.bicep declares it (`useAzureAD`, `azureClientId`, `sslmode=verify-full`,
//! `ignoreErrors`, `initTimeout`). Only what Azure alone knows is filled in locally: the
//! server's host name and port, the identities' names and ids. On top of that they get the
//! stand-ins and nothing else: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (order-processor,
//! its sidecar and the job each have their own header), `DB_PORT`, and the CA as the
//! clients' own configuration takes extra roots: `PGSSLROOTCERT` for sqlx (added to its
//! webpki roots) and `SSL_CERT_FILE` for daprd (its system roots, where Azure's are).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::azure::{ADMIN, AzureLikeServer, PrincipalFunction};
use crate::identity::{Answer, Identity, IdentityEndpoint};
use crate::infra::{Facts, InfraEnv};
use crate::stack::{Database, Platform, Stack, binaries};
use crate::tls::TestCa;

/// The host name clients connect to, which the server's certificate names.
pub const HOST: &str = "localhost";
/// The identity endpoint's name for order-processor's requests.
pub const APP: &str = "order-processor";
/// Its name for the requests of order-processor's sidecar (also the name of the sidecar's
/// log in a [`Stack`]).
pub const SIDECAR: &str = "order-processor-daprd";
/// Its name for the bootstrap job's requests.
pub const JOB: &str = "bootstrap";

/// How an Azure-mode server is set up.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// How the principal function runs.
    pub mode: PrincipalFunction,
    /// How long tokens last (whole seconds); a new one is issued after half of it.
    pub token_lifetime: Duration,
    /// The host name the server's certificate is for.
    pub certificate_host: String,
}

impl Default for AzureOptions {
    /// SECURITY DEFINER, tokens of 30 s, a certificate for [`HOST`].
    fn default() -> Self {
        Self {
            mode: PrincipalFunction::SecurityDefiner,
            token_lifetime: Duration::from_secs(30),
            certificate_host: HOST.to_owned(),
        }
    }
}

/// The server, the CA, the identity endpoint and the identities. Removed when dropped.
pub struct AzureMode {
    /// The test's CA.
    pub ca: TestCa,
    /// The server.
    pub server: AzureLikeServer,
    /// The managed identity endpoint's stand-in.
    pub identity: IdentityEndpoint,
    /// order-processor's identity, whose role the bootstrap creates.
    pub data: Identity,
    /// The PostgreSQL Entra administrator's identity, the bootstrap job's.
    pub admin: Identity,
    /// An identity with no role, for tests that give the app a second one.
    pub other: Identity,
    facts: Facts,
}

impl AzureMode {
    /// Starts the server and the identity endpoint.
    pub async fn start(options: AzureOptions) -> Self {
        let ca = TestCa::new();
        let identity = |name: &str, client_id: &str, object_id: &str| Identity {
            name: name.to_owned(),
            client_id: client_id.to_owned(),
            object_id: object_id.to_owned(),
        };
        let data = identity(
            "id-orders-data",
            "3f2b9c1e-7d4a-4c6b-9e8f-0a1b2c3d4e5f",
            "6f1d2c3b-4a59-4e7d-9c8b-1a2b3c4d5e6f",
        );
        let admin = identity(
            ADMIN,
            "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a",
        );
        let other = identity(
            "id-orders-other",
            "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
            "7e6d5c4b-3a29-4187-9f6e-5d4c3b2a1908",
        );
        let server = AzureLikeServer::start_entra(
            options.mode,
            &ca.server_certificate(&options.certificate_host),
            &admin.name,
            &admin.object_id,
        )
        .await;
        let superuser =
            PgConnectOptions::from_str(&server.superuser_url("postgres")).expect("superuser URL");
        let endpoint = IdentityEndpoint::start(
            superuser,
            vec![data.clone(), admin.clone(), other.clone()],
            options.token_lifetime,
        );
        let mut facts = Facts::default();
        for host in [
            "postgres.host",
            "postgres.name.properties.fullyQualifiedDomainName",
        ] {
            facts.set(host, HOST);
        }
        for (module_name, id) in [("data", &data), ("admin", &admin)] {
            let name = format!("identities.{module_name}Name");
            facts.set(&name, &id.name);
            for (output, property, value) in [
                ("ClientId", "clientId", &id.client_id),
                ("PrincipalId", "principalId", &id.object_id),
            ] {
                facts.set(&format!("identities.{module_name}{output}"), value);
                facts.set(&format!("{name}.properties.{property}"), value);
            }
        }
        Self {
            ca,
            server,
            identity: endpoint,
            data,
            admin,
            other,
            facts,
        }
    }

    /// The app's database, as infra/ names it (order-processor's `DB_NAME`).
    pub fn database_name(&self) -> String {
        self.app_env("order-processor")
            .into_iter()
            .find_map(|(k, v)| (k == "DB_NAME").then_some(v))
            .expect("DB_NAME in infra/app/order-processor.bicep")
    }

    /// What Container Apps gives order-processor, its sidecar and batch, with
    /// order-processor's container holding its data identity.
    pub fn platform(&self) -> Platform {
        self.platform_holding(&[])
    }

    /// [`AzureMode::platform`] with order-processor's container (app and sidecar) holding
    /// `extra` identities as well.
    pub fn platform_holding(&self, extra: &[&Identity]) -> Platform {
        let mut held = vec![&self.data];
        held.extend_from_slice(extra);
        let mut order_processor_env = self.app_env("order-processor");
        order_processor_env.extend(self.identity.caller(APP, &held));
        order_processor_env.push(("DB_PORT".to_owned(), self.port()));
        order_processor_env.push(("PGSSLROOTCERT".to_owned(), self.ca_file()));
        let mut sidecar_env = self.identity.caller(SIDECAR, &held);
        sidecar_env.push(("SSL_CERT_FILE".to_owned(), self.ca_file()));
        let component = serde_json::to_string_pretty(&self.sqldb_component()).expect("JSON");
        Platform {
            order_processor_env,
            batch_env: self.app_env("batch"),
            sidecar_env,
            // daprd reads YAML, of which JSON is a part.
            components: vec![("sqldb.yaml".to_owned(), component)],
        }
    }

    /// The app's database as the stack reaches it through `platform`.
    pub fn database(&self, platform: Platform) -> Database {
        Database::signed_in_by(platform, self.server.superuser_url(&self.database_name()))
    }

    /// An app's environment as infra/app/<module>.bicep gives it, filled in.
    pub fn app_env(&self, service: &str) -> Vec<(String, String)> {
        let env = InfraEnv::get()
            .apps
            .get(service)
            .unwrap_or_else(|| panic!("no app {service} in infra/"));
        let env = self.facts.env(env);
        assert!(
            env.iter().all(|(k, _)| k != "DB_PORT"),
            "infra/ sets DB_PORT now: give it the test server's port instead of adding one"
        );
        env
    }

    /// The bootstrap job's environment, as main.bicep and bootstrap-job.bicep give it,
    /// filled in, with the stand-ins'.
    pub fn job_env(&self) -> Vec<(String, String)> {
        let env = InfraEnv::get()
            .jobs
            .get("bootstrap")
            .expect("the bootstrap job in infra/main.bicep");
        let mut env = self.facts.env(env);
        env.extend(self.identity.caller(JOB, &[&self.admin]));
        env.push(("DB_PORT".to_owned(), self.port()));
        env.push(("PGSSLROOTCERT".to_owned(), self.ca_file()));
        env
    }

    /// The sidecar's PostgreSQL binding as dapr-components.bicep declares it, filled in,
    /// with the test server's port in its connection string.
    pub fn sqldb_component(&self) -> serde_json::Value {
        let component = InfraEnv::get()
            .components
            .get("sqldb")
            .expect("the sqldb component in infra/modules/dapr-components.bicep");
        let mut component = self.facts.json(component);
        let metadata = component["spec"]["metadata"]
            .as_array_mut()
            .expect("metadata");
        let connection = metadata
            .iter_mut()
            .find(|m| m["name"] == "connectionString")
            .expect("a connectionString");
        let text = connection["value"].as_str().expect("a string").to_owned();
        assert_eq!(
            text.matches("port=5432").count(),
            1,
            "the connection string names the port otherwise now: {text}"
        );
        connection["value"] = text
            .replace("port=5432", &format!("port={}", self.port()))
            .into();
        component
    }

    /// The binding's `initTimeout` (Dapr's default, 5 s, when it has none).
    pub fn init_timeout(&self) -> Duration {
        self.sqldb_component()["spec"]["initTimeout"]
            .as_str()
            .map_or(Duration::from_secs(5), |text| {
                go_duration(text).unwrap_or_else(|| panic!("initTimeout {text:?}"))
            })
    }

    /// Runs `order-processor bootstrap` as the Container Apps job does (with the job's
    /// environment and the stand-ins, nothing of the test's own), and checks that it
    /// succeeded.
    pub async fn bootstrap(&self) {
        let output = self
            .bootstrap_command()
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

    /// The command [`AzureMode::bootstrap`] runs, for a test that watches it.
    pub fn bootstrap_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binaries(false).join("order-processor"));
        for name in crate::stack::inherited_sign_in_vars() {
            command.env_remove(name);
        }
        command
            .arg("bootstrap")
            .envs(self.job_env())
            .kill_on_drop(true);
        command
    }

    /// Signs in as `identity`'s role with `token`, over TLS with the server's certificate
    /// verified, as the apps do.
    pub async fn sign_in(
        &self,
        identity: &Identity,
        token: &str,
    ) -> Result<sqlx::PgConnection, sqlx::Error> {
        let options = PgConnectOptions::new_without_pgpass()
            .host(HOST)
            .port(self.server.server().port())
            .username(&identity.name)
            .password(token)
            .database(&self.database_name())
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(self.ca.cert_file());
        sqlx::ConnectOptions::connect(&options).await
    }

    /// Gives the server a certificate for [`HOST`] (after one for another name), and waits
    /// until it presents it.
    pub async fn use_a_certificate_for_the_host(&self) {
        let certificate = self.ca.server_certificate(HOST);
        self.server
            .server()
            .replace_files(&[
                ("server.crt".to_owned(), certificate.cert_pem),
                ("server.key".to_owned(), certificate.key_pem),
            ])
            .await;
        let options = PgConnectOptions::from_str(&self.server.superuser_url("postgres"))
            .expect("superuser URL")
            .host(HOST)
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(self.ca.cert_file());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sqlx::ConnectOptions::connect(&options).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server does not present the new certificate"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How long the last sign-in of order-processor's sidecar took, from its token request
    /// to daprd's `Component loaded: sqldb` (token, TLS, login and the binding's ping), or
    /// `None` while it has not loaded the binding.
    pub fn binding_sign_in(&self, stack: &Stack) -> Option<SignInTime> {
        let loaded = stack
            .log(SIDECAR)
            .lines()
            .filter(|line| line.contains("Component loaded: sqldb "))
            .filter_map(daprd_time)
            .next_back()?;
        let asked = self.identity.requests().into_iter().rfind(|r| {
            r.caller.as_deref() == Some(SIDECAR)
                && r.at <= loaded
                && matches!(r.answer, Answer::Token { .. })
        })?;
        Some(SignInTime {
            total: loaded.duration_since(asked.at).ok()?,
            token: asked.took,
        })
    }

    fn port(&self) -> String {
        self.server.server().port().to_string()
    }

    fn ca_file(&self) -> String {
        self.ca.cert_file().display().to_string()
    }
}

/// How long a sign-in of the binding took.
#[derive(Debug, Clone, Copy)]
pub struct SignInTime {
    /// From the token request to the binding loaded.
    pub total: Duration,
    /// The token request alone (here: the stand-in, with its own bookkeeping).
    pub token: Duration,
}

/// The time of a daprd log line (`time="2026-12-06T22:10:36.696804743Z" ...`).
fn daprd_time(line: &str) -> Option<SystemTime> {
    let start = line.find("time=\"")? + "time=\"".len();
    let end = start + line[start..].find('"')?;
    let time = time::OffsetDateTime::parse(
        &line[start..end],
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(time.into())
}

/// A Go duration of one unit: `500ms`, `20s`, `1m`.
fn go_duration(text: &str) -> Option<Duration> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let value: u64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "ms" => Some(Duration::from_millis(value)),
        "s" => Some(Duration::from_secs(value)),
        "m" => Some(Duration::from_secs(value * 60)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daprd_times_are_read_to_the_nanosecond() {
        let a = daprd_time(r#"time="2026-12-06T22:10:36.696804743Z" level=info msg="x""#).unwrap();
        let b = daprd_time(r#"time="2026-12-06T22:10:37.000000000Z" level=info msg="y""#).unwrap();
        assert_eq!(
            b.duration_since(a).unwrap(),
            Duration::from_nanos(303_195_257)
        );
    }

    #[test]
    fn go_durations_of_one_unit_are_read() {
        assert_eq!(go_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("1h30m"), None);
    }
}
