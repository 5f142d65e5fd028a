-- Messaging: enablement, conversations, participants, encrypted messages,
-- the event log that live updates read, and the outbox relayed to notify.

CREATE TABLE practice_settings (
    practice_id               text PRIMARY KEY,
    secure_messaging_enabled  boolean NOT NULL DEFAULT true,
    auto_enable_new_clients   boolean NOT NULL DEFAULT false,
    updated_at                timestamptz NOT NULL DEFAULT now(),
    updated_by                text NOT NULL DEFAULT ''
);

CREATE TABLE client_messaging (
    client_id    text PRIMARY KEY,
    practice_id  text NOT NULL,
    enabled      boolean NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL
);

CREATE TABLE conversations (
    conversation_id   uuid PRIMARY KEY,
    practice_id       text NOT NULL,
    -- The client in a staff-and-client conversation; NULL between staff.
    client_id         text,
    -- The sorted participant ids joined with ','; finds the conversation with exactly these people.
    participant_key   text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_activity_at  timestamptz NOT NULL DEFAULT now(),
    last_seq          bigint NOT NULL DEFAULT 0,
    CONSTRAINT conversations_participant_key_unique UNIQUE (practice_id, participant_key)
);

CREATE TABLE participants (
    conversation_id   uuid NOT NULL REFERENCES conversations (conversation_id),
    user_id           text NOT NULL,
    is_staff          boolean NOT NULL,
    -- The participant's read cursor: messages with seq <= read_seq are read.
    read_seq          bigint NOT NULL DEFAULT 0,
    -- A copy of conversations.last_activity_at (written in the same transaction), so
    -- that a person's conversations are listed newest first straight from one index.
    last_activity_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX participants_by_user_activity
    ON participants (user_id, last_activity_at DESC, conversation_id DESC);

CREATE TABLE messages (
    message_id       uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (conversation_id),
    seq              bigint NOT NULL,
    sender_id        text NOT NULL,
    -- AES-256-GCM; associated data binds the ciphertext to practice, conversation and message.
    body_ciphertext  bytea NOT NULL,
    nonce            bytea NOT NULL,
    key_version      integer NOT NULL,
    -- A keyed digest (HMAC-SHA256) of the body: tells an idempotent retry from a
    -- different message without decrypting, and without allowing guesses of short bodies.
    body_sha256      bytea NOT NULL,
    idempotency_key  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_conversation_seq_unique UNIQUE (conversation_id, seq),
    CONSTRAINT messages_sender_idempotency_unique UNIQUE (sender_id, idempotency_key)
);

-- Event ids are drawn under a shared advisory lock held until the drawing
-- transaction ends. A reader that briefly takes the same lock exclusively
-- therefore knows that every id up to the sequence's current value is committed
-- (or rolled back): it can hand out events in id order without ever skipping one
-- that commits late. See Storage.event_high_water.
CREATE SEQUENCE events_event_id_seq;

CREATE FUNCTION messaging_next_event_id() RETURNS bigint
    LANGUAGE sql VOLATILE
AS $$
    SELECT pg_advisory_xact_lock_shared(7146101);
    SELECT nextval('events_event_id_seq');
$$;

CREATE TABLE events (
    event_id         bigint PRIMARY KEY DEFAULT messaging_next_event_id(),
    kind             text NOT NULL CHECK (kind IN ('message_created', 'read_updated', 'conversation_created')),
    conversation_id  uuid NOT NULL,
    seq              bigint NOT NULL DEFAULT 0,
    actor_id         text NOT NULL,
    -- Who may see the event.
    recipient_ids    text[] NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

ALTER SEQUENCE events_event_id_seq OWNED BY events.event_id;

CREATE INDEX events_by_recipient ON events USING gin (recipient_ids);

CREATE TABLE outbox (
    outbox_id        bigserial PRIMARY KEY,
    event_id         bigint NOT NULL REFERENCES events (event_id),
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    relayed_at       timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_pending ON outbox (outbox_id) WHERE relayed_at IS NULL;

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
