-- TOTP second factor, recovery codes, pending second-factor sign-ins,
-- the practice's "require two-step verification for staff" setting, deactivated
-- users, and an append-only audit trail.

-- A deactivated person cannot sign in and has no live session.
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;

ALTER TABLE practices ADD COLUMN require_mfa_for_staff boolean NOT NULL DEFAULT false;

-- One TOTP secret per user. The secret is sealed with AES-256-GCM under the MFA
-- data key (never stored in clear); the user id is the associated data, so a
-- sealed secret copied to another user does not open. confirmed_at NULL: an
-- enrolment that was begun but not confirmed, which does nothing at sign-in.
CREATE TABLE totp_credentials (
    user_id          uuid PRIMARY KEY REFERENCES users (user_id),
    secret_sealed    bytea NOT NULL,
    secret_nonce     bytea NOT NULL,
    key_version      integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    confirmed_at     timestamptz,
    -- The last 30-second step whose code was accepted: a code is never accepted twice.
    last_used_step   bigint NOT NULL DEFAULT 0
);

-- Recovery codes, single use, stored as keyed hashes only.
CREATE TABLE recovery_codes (
    user_id     uuid NOT NULL REFERENCES users (user_id),
    code_hash   bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A sign-in whose password was right and whose second factor (or enrolment) is
-- still to come. Only the token's sha256 is stored; it yields one session at most.
CREATE TABLE second_factor_pending (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (user_id),
    purpose     text NOT NULL CHECK (purpose IN ('verify', 'enroll')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE INDEX second_factor_pending_user_idx ON second_factor_pending (user_id);
CREATE INDEX second_factor_pending_expires_idx ON second_factor_pending (expires_at);

-- The audit trail is append-only: history is never rewritten.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- The owner's audit page: a practice's rows, newest first.
CREATE INDEX audit_events_practice_idx ON audit_events (practice_id, event_id DESC);
