-- Notify: notification jobs (one per recipient and channel) and the development mailbox.
-- A job never stores message text: only ids, plus the body of consent replies
-- (STOP/START/HELP confirmations, which are fixed texts and not PHI).

CREATE TABLE notification_jobs (
    job_id           bigserial PRIMARY KEY,
    -- Makes messaging's at-least-once outbox exactly-once here.
    dedupe_key       text NOT NULL UNIQUE,
    event_id         text NOT NULL DEFAULT '',
    kind             text NOT NULL CHECK (kind IN ('message_email', 'message_sms', 'sms_reply')),
    channel          text NOT NULL CHECK (channel IN ('email', 'sms')),
    practice_id      text NOT NULL DEFAULT '',
    conversation_id  text NOT NULL DEFAULT '',
    recipient_id     text NOT NULL DEFAULT '',
    to_address       text NULL,
    body             text NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'sent', 'coalesced', 'skipped', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text NOT NULL DEFAULT '',
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz NULL,
    CHECK (kind = 'sms_reply' OR body IS NULL)
);

-- The worker's queue: pending jobs that are due.
CREATE INDEX notification_jobs_due_idx ON notification_jobs (next_attempt_at, job_id) WHERE status = 'pending';
-- The burst rule: the latest job of a kind for a recipient and conversation.
CREATE INDEX notification_jobs_burst_idx ON notification_jobs (recipient_id, conversation_id, kind, created_at);

-- What the development transport "delivers": read through ListMailbox in development mode.
CREATE TABLE mailbox (
    item_id     bigserial PRIMARY KEY,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    to_address  text NOT NULL,
    subject     text NOT NULL DEFAULT '',
    text_body   text NOT NULL,
    html_body   text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mailbox_to_idx ON mailbox (to_address, item_id);

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
