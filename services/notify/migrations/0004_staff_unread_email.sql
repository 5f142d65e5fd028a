-- Staff unread emails: a staff member who has not read a message after a delay
-- gets one email about it (at most one per conversation per interval). Each job
-- keeps the message's place in its conversation (seq), so the worker can ask
-- messaging whether the person's read cursor reached it; if so the job is
-- 'cancelled'. While a staff email is being sent its job's sent_at is set
-- early: that reserves the interval for the (staff member, conversation) pair.

ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_kind_check;
ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_kind_check
    CHECK (kind IN ('message_email', 'message_sms', 'sms_reply', 'account_notice', 'staff_unread_email'));

ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_status_check;
ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_status_check
    CHECK (status IN ('pending', 'sent', 'coalesced', 'skipped', 'failed', 'cancelled'));

-- The message's seq in its conversation (0: not known, from an older messaging).
ALTER TABLE notification_jobs ADD COLUMN seq bigint NOT NULL DEFAULT 0;
