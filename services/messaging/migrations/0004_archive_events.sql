-- Archiving (or bringing back) a conversation tells the person's other tabs and devices.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('message_created', 'read_updated', 'conversation_created', 'conversation_archived'));
