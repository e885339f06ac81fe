//! A PostgreSQL server set up the way Azure Database for PostgreSQL flexible server sets
//! one up, as far as the bootstrap can tell: a superuser the customer never gets (Azure's
//! `azuresu`), a Microsoft Entra administrator that is not a superuser (a member of
//! `azure_pg_admin` with CREATEROLE and CREATEDB) and a stand-in for Azure's
//! `pgaadauth_create_principal_with_oid` with its signature. Azure does not document
//! whether that function is SECURITY DEFINER, which decides whether the administrator
//! gets any right over the roles it creates, so both modes are available. Identities sign
//! in with a token in Azure; here the password of a principal is its object id.

use crate::pg::PrivateServer;

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
}

impl AzureLikeServer {
    /// Starts a new private server and prepares it.
    pub async fn start(mode: PrincipalFunction) -> Self {
        let server = PrivateServer::start().await;
        let setup = SETUP
            .replace("{admin}", ADMIN)
            .replace("{admin_password}", ADMIN_PASSWORD)
            .replace("{security}", mode.sql());
        let mut conn = server.connect_as_superuser("postgres").await;
        sqlx::Executor::execute(&mut conn, sqlx::raw_sql(sqlx::AssertSqlSafe(setup)))
            .await
            .expect("prepare the Azure-like server");
        Self { server, mode }
    }

    /// The superuser's URL of `database` (for checks only: in Azure nobody has it).
    pub fn superuser_url(&self, database: &str) -> String {
        self.server
            .url_as("postgres", crate::pg::PRIVATE_PASSWORD, database)
    }

    /// The Entra administrator's URL of `database`.
    pub fn admin_url(&self, database: &str) -> String {
        self.server.url_as(ADMIN, ADMIN_PASSWORD, database)
    }

    /// The URL a principal created by the principal function signs in with.
    pub fn principal_url(&self, role: &str, object_id: &str, database: &str) -> String {
        self.server.url_as(role, object_id, database)
    }

    /// The server underneath.
    pub fn server(&self) -> &PrivateServer {
        &self.server
    }
}

/// Run as the superuser in the `postgres` database. `azure_pg_admin`, the administrator's
/// attributes and the function's signature and result are Azure's (see docs/azure.md for
/// the sources); the body stands in for what Azure's does (it maps the role to the Entra
/// identity with `SECURITY LABEL ... 'aadauth,oid=…,type=…'`).
const SETUP: &str = r#"
CREATE ROLE azure_pg_admin NOLOGIN;
CREATE ROLE "{admin}" LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE PASSWORD '{admin_password}';
GRANT azure_pg_admin TO "{admin}";

CREATE FUNCTION public.pgaadauth_create_principal_with_oid(
    roleName text, objectId text, objectType text, isAdmin boolean, isMfa boolean
) RETURNS text LANGUAGE plpgsql {security} SET search_path = pg_catalog AS $$
BEGIN
    IF objectType NOT IN ('user', 'group', 'service') THEN
        RAISE EXCEPTION 'objectType must be user, group or service, not %', objectType;
    END IF;
    IF objectId !~ '^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$' THEN
        RAISE EXCEPTION 'objectId % is not a GUID', objectId;
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', roleName, objectId);
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
