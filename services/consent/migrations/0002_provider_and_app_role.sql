-- Issue 5: opt-outs in the client's own words and what the SMS provider says, in the
-- ledger with the provider that carried them; inbound SMS deduplicated per provider;
-- and an application role that cannot rewrite the ledger or the audit trail.

ALTER TABLE consent_ledger DROP CONSTRAINT consent_ledger_event_check;
ALTER TABLE consent_ledger ADD CONSTRAINT consent_ledger_event_check CHECK (event IN (
    'number_added', 'number_changed', 'number_deleted',
    'text_ok_checked', 'text_ok_unchecked',
    'keyword_stop', 'keyword_start', 'free_text_revocation', 'help_requested',
    'confirmation_sent', 'provider_block_seen', 'provider_opt_in_requested'));

-- "sns", "twilio" or "development" (the development mailbox); NULL when no provider was involved.
ALTER TABLE consent_ledger ADD COLUMN provider text NULL;

-- AWS lets a number be opted in again once per 30 days: the last request per number.
CREATE INDEX consent_ledger_opt_in_idx ON consent_ledger (phone_e164, created_at)
    WHERE event = 'provider_opt_in_requested';

-- A message id is the provider's: the same id from two providers is two messages.
ALTER TABLE inbound_sms ADD COLUMN provider text NOT NULL DEFAULT '';
ALTER TABLE inbound_sms ADD COLUMN to_e164 text NULL;
ALTER TABLE inbound_sms DROP CONSTRAINT inbound_sms_pkey;
ALTER TABLE inbound_sms ADD PRIMARY KEY (provider, provider_message_id);
-- The practices a message acted for: a retried delivery gets the same reply again
-- (notify sends one reply per inbound message, so a lost first reply is not lost for good).
ALTER TABLE inbound_sms ADD COLUMN practice_ids text[] NOT NULL DEFAULT '{}';

-- The service's queries run as confidant_consent_app (SET ROLE on each pooled
-- connection, CONFIDANT_CONSENT_DATABASE_APP_ROLE), which may append to the ledger and
-- the audit trail but never UPDATE, DELETE or TRUNCATE them: the append-only guarantee
-- then holds against the application itself, not only through the triggers. Roles are
-- cluster-wide: where the migrating user may not create roles, an operator creates
-- this one (NOLOGIN, granted to the login user) and the grants below apply when it exists.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'confidant_consent_app') THEN
        BEGIN
            CREATE ROLE confidant_consent_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;        -- another database's migration made it meanwhile
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'confidant_consent_app does not exist and cannot be created here';
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'confidant_consent_app') THEN
        BEGIN
            EXECUTE 'GRANT confidant_consent_app TO ' || quote_ident(current_user);
        EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN NULL;
        END;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO confidant_consent_app;
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO confidant_consent_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON consent_ledger FROM confidant_consent_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM confidant_consent_app;
        REVOKE ALL ON schema_migrations FROM confidant_consent_app;
        -- Tables of later migrations (made by the same migrating user) are granted too;
        -- a later migration that adds an append-only table revokes as above.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO confidant_consent_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO confidant_consent_app;
    END IF;
END $$;
