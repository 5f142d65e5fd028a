-- Real providers (issue 6): what happened to each job after it left, the suppression
-- list that bounces and complaints feed, and clients' discreet alerts.

ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_status_check;
ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_status_check
    CHECK (status IN ('pending', 'sent', 'coalesced', 'skipped', 'failed', 'cancelled', 'suppressed'));

-- The message an alert is about (shown to staff as its delivery status).
ALTER TABLE notification_jobs ADD COLUMN message_id text NOT NULL DEFAULT '';
-- The claim (lease) a worker holds on a pending job: only its holder may settle the job.
ALTER TABLE notification_jobs ADD COLUMN claim_id uuid NULL;
-- Which transport took the job and the id it gave (SES MessageId, SNS MessageId, the
-- SMTP Message-ID, the mailbox item): provider feedback is matched by it.
ALTER TABLE notification_jobs ADD COLUMN transport text NOT NULL DEFAULT '';
ALTER TABLE notification_jobs ADD COLUMN provider_message_id text NULL;
-- What the provider reported afterwards.
ALTER TABLE notification_jobs ADD COLUMN feedback text NOT NULL DEFAULT ''
    CHECK (feedback IN ('', 'delivered', 'bounced', 'complained'));
ALTER TABLE notification_jobs ADD COLUMN updated_at timestamptz NULL;
UPDATE notification_jobs SET updated_at = COALESCE(sent_at, created_at);
ALTER TABLE notification_jobs ALTER COLUMN updated_at SET NOT NULL;
ALTER TABLE notification_jobs ALTER COLUMN updated_at SET DEFAULT now();

CREATE INDEX notification_jobs_provider_idx ON notification_jobs (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX notification_jobs_conversation_idx ON notification_jobs (conversation_id, message_id);
-- Failed jobs, for requeueing.
CREATE INDEX notification_jobs_failed_idx ON notification_jobs (practice_id, job_id) WHERE status = 'failed';

-- Addresses that bounced permanently or complained: later emails to them are not sent.
CREATE TABLE suppressed_addresses (
    address      text PRIMARY KEY,  -- lower case
    reason       text NOT NULL CHECK (reason IN ('bounce', 'complaint')),
    feedback_id  text NOT NULL,
    created_at   timestamptz NOT NULL
);

-- Each provider event once: a repeated feedback_id has no further effect.
CREATE TABLE delivery_feedback (
    feedback_id          text PRIMARY KEY,
    kind                 text NOT NULL CHECK (kind IN ('bounce', 'complaint', 'delivery')),
    provider_message_id  text NOT NULL DEFAULT '',
    permanent            boolean NOT NULL DEFAULT false,
    suppressed           integer NOT NULL DEFAULT 0,
    received_at          timestamptz NOT NULL
);

-- A client's alerts: discreet ones name no practice (a neutral sender and text).
CREATE TABLE client_notification_settings (
    client_id    text PRIMARY KEY,
    practice_id  text NOT NULL,
    discreet     boolean NOT NULL DEFAULT false,
    updated_by   text NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- The development mailbox shows who an email says it is from.
ALTER TABLE mailbox ADD COLUMN sender text NOT NULL DEFAULT '';
