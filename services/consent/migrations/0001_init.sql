-- Consent: clients' phone numbers, "Text message ok", the append-only consent
-- ledger (the source of truth for the consent state) and inbound SMS dedupe.

-- The current number and checkbox per client, kept in step with the ledger.
CREATE TABLE phone_numbers (
    client_id    text PRIMARY KEY,
    practice_id  text NOT NULL,
    phone_e164   text NULL,
    text_ok      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (phone_e164 IS NOT NULL OR NOT text_ok)
);

-- Inbound SMS are matched to clients by number.
CREATE INDEX phone_numbers_phone_idx ON phone_numbers (phone_e164) WHERE phone_e164 IS NOT NULL;

CREATE TABLE consent_ledger (
    entry_id             bigserial PRIMARY KEY,
    client_id            text NOT NULL,
    practice_id          text NOT NULL,
    event                text NOT NULL CHECK (event IN (
                             'number_added', 'number_changed', 'number_deleted',
                             'text_ok_checked', 'text_ok_unchecked',
                             'keyword_stop', 'keyword_start', 'help_requested',
                             'confirmation_sent')),
    actor                text NOT NULL,
    source               text NOT NULL,
    phone_e164           text NULL,
    provider_message_id  text NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX consent_ledger_client_idx ON consent_ledger (client_id, entry_id);

-- The ledger is append-only: history is never rewritten.
CREATE FUNCTION consent_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_ledger is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER consent_ledger_no_update_delete
    BEFORE UPDATE OR DELETE ON consent_ledger
    FOR EACH ROW EXECUTE FUNCTION consent_ledger_append_only();

CREATE TRIGGER consent_ledger_no_truncate
    BEFORE TRUNCATE ON consent_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION consent_ledger_append_only();

-- One row per provider message id, so a retried webhook acts once. No body is stored.
CREATE TABLE inbound_sms (
    provider_message_id  text PRIMARY KEY,
    from_e164            text NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    action               text NOT NULL DEFAULT 'none'
);

CREATE TABLE audit_events (
    event_id     bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    practice_id  text NOT NULL DEFAULT '',
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL DEFAULT '',
    outcome      text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    text NOT NULL,
    row_hash     text NOT NULL
);
