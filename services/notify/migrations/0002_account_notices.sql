-- Account notices from auth (e.g. "your account was locked"): one email job per
-- notice, deduplicated by auth's dedupe key. The notice itself carries no PHI.

ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_kind_check;
ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_kind_check
    CHECK (kind IN ('message_email', 'message_sms', 'sms_reply', 'account_notice'));

-- For account_notice jobs: which notice ('locked') and, for a lock, its length in minutes.
ALTER TABLE notification_jobs ADD COLUMN notice text NOT NULL DEFAULT '';
ALTER TABLE notification_jobs ADD COLUMN notice_minutes integer NOT NULL DEFAULT 0;
