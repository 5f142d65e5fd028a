-- The owner's audit page reads a practice's rows newest first (AuditService.ListAuditEvents):
-- from this index instead of the whole trail, which every practice's reads and sends share.
CREATE INDEX audit_events_practice_idx ON audit_events (practice_id, event_id DESC);
