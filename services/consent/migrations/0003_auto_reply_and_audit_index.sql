-- Issue 11: the once-a-day automatic answer to a text that is not a keyword is a ledger
-- entry (never the text's words), and the owner's audit page lists a practice's rows.

ALTER TABLE consent_ledger DROP CONSTRAINT consent_ledger_event_check;
ALTER TABLE consent_ledger ADD CONSTRAINT consent_ledger_event_check CHECK (event IN (
    'number_added', 'number_changed', 'number_deleted',
    'text_ok_checked', 'text_ok_unchecked',
    'keyword_stop', 'keyword_start', 'free_text_revocation', 'help_requested',
    'confirmation_sent', 'provider_block_seen', 'provider_opt_in_requested',
    'auto_reply_sent'));

-- "Was this number answered in the last 24 hours?", for any client.
CREATE INDEX consent_ledger_auto_reply_idx ON consent_ledger (phone_e164, created_at)
    WHERE event = 'auto_reply_sent';

-- The owner's audit page (confidant.audit.v1.AuditService): a practice's rows, newest first.
CREATE INDEX audit_events_practice_idx ON audit_events (practice_id, event_id DESC);
