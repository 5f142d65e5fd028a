-- The practice owner's audit page (confidant.audit.v1.AuditService) reads a practice's
-- rows newest first, filtered by person, client, action and period: one index range.
CREATE INDEX audit_events_practice_idx ON audit_events (practice_id, event_id DESC);
