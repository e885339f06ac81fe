//! A PostgreSQL server set up the way Azure Database for PostgreSQL flexible server sets
//! one up, as far as the bootstrap can tell: a superuser the customer never gets (Azure's
//! `azuresu`), a Microsoft Entra administrator that is not a superuser (a member of
//! `azure_pg_admin` with CREATEROLE and CREATEDB) and a stand-in for Azure's
//! `pgaadauth_create_principal_with_oid` with its signature. Azure does not document
//! whether that function is SECURITY DEFINER, which decides whether the administrator
//! gets any right over the roles it creates, so both modes are available.
//!
//! How identities sign in comes in two kinds. With passwords ([`AzureLikeServer::start`]),
//! a principal's password is its object id. As Azure signs them in
//! ([`AzureLikeServer::start_entra`]): TLS only, with a certificate of the test's CA, for
//! every role but the superuser (`hostssl` and SCRAM in `pg_hba.conf`, plain TCP
//! rejected), and a role's password is the current token of its identity, set by the
//! managed identity endpoint's stand-in ([`crate::identity`]) whenever it issues one and by
//! the principal function when it creates the role, so that a token works from the moment
//! its role exists, as with Entra ID. Tokens expire with their role's password
//! (`VALID UNTIL`). Connections are logged (`log_connections`).

use crate::pg::{PrivateServer, ServerSetup};
use crate::tls::ServerCertificate;

/// How the stand-in of `pgaadauth_create_principal_with_oid` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalFunction {
    /// Owned by the superuser and run with its rights: the role is created by the
    /// superuser, so the administrator holds no membership in it and no ADMIN OPTION.
    SecurityDefiner,
    /// Run with the administrator's rights: PostgreSQL 16+ gives the administrator ADMIN
    /// OPTION (but neither SET nor INHERIT) on the role it creates.
    SecurityInvoker,
}

impl PrincipalFunction {
    /// Both modes, for tests that must hold in either.
    pub const BOTH: [Self; 2] = [Self::SecurityDefiner, Self::SecurityInvoker];

    fn sql(self) -> &'static str {
        match self {
            Self::SecurityDefiner => "SECURITY DEFINER",
            Self::SecurityInvoker => "SECURITY INVOKER",
        }
    }
}

/// The Entra administrator's role name (in Azure, the administrator identity's name).
pub const ADMIN: &str = "id-pg-admin";
const ADMIN_PASSWORD: &str = "entra-admin-token";

/// A private server prepared like Azure's. Removed when dropped.
pub struct AzureLikeServer {
    server: PrivateServer,
    /// The mode of its principal function.
    pub mode: PrincipalFunction,
    entra: bool,
}

impl AzureLikeServer {
    /// Starts a new private server and prepares it; identities sign in with passwords.
    pub async fn start(mode: PrincipalFunction) -> Self {
        let server = PrivateServer::start().await;
        let setup = SETUP
            .replace("{admin_login}", &format!("PASSWORD '{ADMIN_PASSWORD}'"))
            .replace("{create_role}", CREATE_ROLE_WITH_PASSWORD)
            .replace("{admin}", ADMIN)
            .replace("{security}", mode.sql());
        prepare(&server, &setup).await;
        Self {
            server,
            mode,
            entra: false,
        }
    }

    /// Starts a new private server, prepared to sign identities in as Azure does: TLS
    /// with `certificate` only, and tokens as passwords. `admin` is the Entra
    /// administrator's role, `admin_object_id` its identity's object id.
    pub async fn start_entra(
        mode: PrincipalFunction,
        certificate: &ServerCertificate,
        admin: &str,
        admin_object_id: &str,
    ) -> Self {
        let server = PrivateServer::start_with(ServerSetup {
            files: vec![
                ("server.crt".to_owned(), certificate.cert_pem.clone()),
                ("server.key".to_owned(), certificate.key_pem.clone()),
                ("pg_hba.conf".to_owned(), ENTRA_HBA.to_owned()),
            ],
            settings: vec![
                ("ssl".to_owned(), "on".to_owned()),
                ("log_connections".to_owned(), "on".to_owned()),
            ],
        })
        .await;
        let setup = [SETUP, ENTRA_SETUP]
            .concat()
            .replace("{admin_login}", "")
            .replace("{create_role}", CREATE_ROLE_WITH_TOKEN)
            .replace("{admin}", admin)
            .replace("{admin_object_id}", admin_object_id)
            .replace("{security}", mode.sql());
        prepare(&server, &setup).await;
        Self {
            server,
            mode,
            entra: true,
        }
    }

    /// The superuser's URL of `database` (for checks only: in Azure nobody has it).
    pub fn superuser_url(&self, database: &str) -> String {
        self.server
            .url_as("postgres", crate::pg::PRIVATE_PASSWORD, database)
    }

    /// The Entra administrator's URL of `database` (servers with passwords only).
    pub fn admin_url(&self, database: &str) -> String {
        assert!(!self.entra, "the administrator signs in with a token here");
        self.server.url_as(ADMIN, ADMIN_PASSWORD, database)
    }

    /// The URL a principal created by the principal function signs in with (servers with
    /// passwords only).
    pub fn principal_url(&self, role: &str, object_id: &str, database: &str) -> String {
        assert!(!self.entra, "principals sign in with tokens here");
        self.server.url_as(role, object_id, database)
    }

    /// The server underneath.
    pub fn server(&self) -> &PrivateServer {
        &self.server
    }
}

async fn prepare(server: &PrivateServer, setup: &str) {
    let mut conn = server.connect_as_superuser("postgres").await;
    sqlx::Executor::execute(
        &mut conn,
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned())),
    )
    .await
    .expect("prepare the Azure-like server");
}

/// Run as the superuser in the `postgres` database. `azure_pg_admin`, the administrator's
/// attributes and the function's signature and result are Azure's (see docs/azure.md for
/// the sources); the body stands in for what Azure's does (it maps the role to the Entra
/// identity with `SECURITY LABEL ... 'aadauth,oid=…,type=…'`).
const SETUP: &str = r#"
CREATE ROLE azure_pg_admin NOLOGIN;
CREATE ROLE "{admin}" LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE {admin_login};
GRANT azure_pg_admin TO "{admin}";

CREATE FUNCTION public.pgaadauth_create_principal_with_oid(
    roleName text, objectId text, objectType text, isAdmin boolean, isMfa boolean
) RETURNS text LANGUAGE plpgsql {security} SET search_path = pg_catalog AS $$
DECLARE
    token text;
    expires timestamptz;
BEGIN
    IF objectType NOT IN ('user', 'group', 'service') THEN
        RAISE EXCEPTION 'objectType must be user, group or service, not %', objectType;
    END IF;
    IF objectId !~ '^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$' THEN
        RAISE EXCEPTION 'objectId % is not a GUID', objectId;
    END IF;
    {create_role}
    IF isAdmin THEN
        EXECUTE format('ALTER ROLE %I CREATEROLE CREATEDB', roleName);
        EXECUTE format('GRANT azure_pg_admin TO %I', roleName);
    END IF;
    RETURN format('Created role for "%s"', roleName);
END
$$;
REVOKE ALL ON FUNCTION public.pgaadauth_create_principal_with_oid(text, text, text, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgaadauth_create_principal_with_oid(text, text, text, boolean, boolean) TO azure_pg_admin;
"#;

const CREATE_ROLE_WITH_PASSWORD: &str =
    "EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', roleName, objectId);";

/// The role takes its identity's current token, if one was issued (else it cannot sign in
/// until one is).
const CREATE_ROLE_WITH_TOKEN: &str = r#"
    SELECT p.token, p.expires INTO token, expires
    FROM entra_stand_in.register_principal(objectId, roleName) AS p;
    IF token IS NULL THEN
        EXECUTE format('CREATE ROLE %I LOGIN', roleName);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L VALID UNTIL %L', roleName, token, expires);
    END IF;"#;

/// Where the identity endpoint's stand-in keeps each identity's current token and role,
/// out of everyone's reach but the superuser's; `register_principal` (the principal
/// function's way in) maps a role to its identity and answers its current token. Its row
/// lock makes a token issued while the role is being created wait for the role.
const ENTRA_SETUP: &str = r#"
CREATE SCHEMA entra_stand_in;
REVOKE ALL ON SCHEMA entra_stand_in FROM PUBLIC;
CREATE TABLE entra_stand_in.principals (
    object_id text PRIMARY KEY,
    role text,
    token text,
    expires timestamptz
);
INSERT INTO entra_stand_in.principals (object_id, role) VALUES ('{admin_object_id}', '{admin}');

CREATE FUNCTION entra_stand_in.register_principal(object_id text, role text)
RETURNS TABLE (token text, expires timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    INSERT INTO entra_stand_in.principals AS p (object_id, role) VALUES ($1, $2)
    ON CONFLICT (object_id) DO UPDATE SET role = excluded.role
    RETURNING p.token, p.expires
$$;
REVOKE ALL ON FUNCTION entra_stand_in.register_principal(text, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA entra_stand_in TO azure_pg_admin;
GRANT EXECUTE ON FUNCTION entra_stand_in.register_principal(text, text) TO azure_pg_admin;
"#;

/// TLS and SCRAM for every role; without TLS the superuser alone (for the test's checks).
const ENTRA_HBA: &str = "\
# TYPE  DATABASE USER     ADDRESS       METHOD
local   all      postgres               scram-sha-256
host    all      postgres 127.0.0.1/32  scram-sha-256
hostssl all      all      127.0.0.1/32  scram-sha-256
host    all      all      127.0.0.1/32  reject
";
