-- Creates the ordinary role order-processor connects as and lets it use the current
-- database: CONNECT, TEMPORARY and CREATE, so that the app's migrations can create the
-- schema `app` they own. Run as a superuser or the database owner, with psql:
--
--   psql "$ADMIN_URL" -v app_role=order_processor -v app_password=... -f db/bootstrap.sql
--
-- The role gets no superuser, CREATEDB or CREATEROLE rights and no CREATE on `public`
-- (the default since PostgreSQL 15), so a grant this template forgets fails locally just
-- as it would in Azure. In Azure `order-processor bootstrap` gives the app's managed
-- identity the same grants. Safe to run again, and from several processes at once.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

SELECT set_config('bootstrap.app_role', :'app_role', false),
       set_config('bootstrap.app_password', :'app_password', false) \g /dev/null

DO $$
DECLARE
    app_role text := current_setting('bootstrap.app_role');
    app_password text := current_setting('bootstrap.app_password');
    existing pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO existing FROM pg_roles WHERE rolname = app_role;
    IF NOT FOUND THEN
        BEGIN
            EXECUTE format(
                'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD %L',
                app_role, app_password);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created by a concurrent bootstrap
        END;
    ELSIF existing.rolsuper OR existing.rolcreatedb OR existing.rolcreaterole OR existing.rolbypassrls THEN
        RAISE EXCEPTION 'role % exists with administrative rights; order-processor must use an ordinary role', app_role;
    END IF;
END
$$;

GRANT CONNECT, TEMPORARY, CREATE ON DATABASE :"DBNAME" TO :"app_role";
