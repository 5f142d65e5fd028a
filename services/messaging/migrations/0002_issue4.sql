-- Issue 4: the team-messaging switch, archiving per participant.

-- Staff-only conversations follow this switch; conversations with a client
-- follow secure_messaging_enabled (and the client's own switch).
ALTER TABLE practice_settings ADD COLUMN team_messaging_enabled boolean NOT NULL DEFAULT true;

-- Archived by this participant (their own view only); a new message clears it
-- for everyone, in the message's transaction.
ALTER TABLE participants ADD COLUMN archived boolean NOT NULL DEFAULT false;

-- A person's list is either their archived or their other conversations, newest
-- first: equality on (user_id, archived), then the keyset order, from one index.
DROP INDEX participants_by_user_activity;
CREATE INDEX participants_by_user_activity
    ON participants (user_id, archived, last_activity_at DESC, conversation_id DESC);
