-- The revocation feed. Deactivating a person or deleting a service
-- account must end its access tokens at once, not when they expire: every service
-- keeps the recent revocations (ListRevocations) and refuses a token of a revoked
-- subject issued before its revocation.
--
-- Rows are written by triggers, so no code path that deactivates or deletes can
-- forget them. Writers take an advisory lock first, so revisions become visible in
-- order: a reader that sees revision N has seen every revision below N.

CREATE TABLE revocations (
    revision    bigserial PRIMARY KEY,
    subject     uuid NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('user_deactivated', 'service_account_deleted')),
    revoked_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX revocations_revoked_at_idx ON revocations (revoked_at);

CREATE FUNCTION record_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7146202);
    INSERT INTO revocations (subject, reason) VALUES (NEW.user_id, TG_ARGV[0]);
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_deactivated_revoke
    AFTER UPDATE OF deactivated_at ON users
    FOR EACH ROW WHEN (OLD.deactivated_at IS NULL AND NEW.deactivated_at IS NOT NULL)
    EXECUTE FUNCTION record_revocation('user_deactivated');

CREATE TRIGGER service_accounts_deleted_revoke
    AFTER UPDATE OF deleted_at ON service_accounts
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION record_revocation('service_account_deleted');
