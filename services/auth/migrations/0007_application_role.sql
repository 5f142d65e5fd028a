-- The application's queries run as confidant_auth_app (the service does SET ROLE
-- on each pooled connection), a role that may not UPDATE, DELETE or TRUNCATE the
-- audit trail: the append-only guarantee then holds even against the application
-- itself, not only through the triggers. Roles are cluster-wide: where the
-- migrating user may not create roles, an operator creates this one (NOLOGIN,
-- granted to the login user) and the grants below apply when it exists.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'confidant_auth_app') THEN
        BEGIN
            CREATE ROLE confidant_auth_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;        -- another database's migration made it meanwhile
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'confidant_auth_app does not exist and cannot be created here';
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'confidant_auth_app') THEN
        BEGIN
            EXECUTE 'GRANT confidant_auth_app TO ' || quote_ident(current_user);
        EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN NULL;
        END;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO confidant_auth_app;
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO confidant_auth_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM confidant_auth_app;
        REVOKE ALL ON schema_migrations FROM confidant_auth_app;
        -- Tables of later migrations (made by the same migrating user) are granted too;
        -- a later migration that adds an append-only table revokes as above.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO confidant_auth_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO confidant_auth_app;
    END IF;
END $$;
