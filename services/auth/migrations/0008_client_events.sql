-- The client-created outbox. Every new client (CreateClient, or CreateUser with
-- the client role) writes a row here in the transaction that creates them; a
-- background relay (services/auth/client_events.py) hands each row to messaging's
-- HandleClientCreated until messaging has answered, so a committed client always
-- reaches messaging (automatic enablement and the portal invitation) even when
-- messaging was down at the time.
CREATE TABLE client_events (
    event_id         bigserial PRIMARY KEY,
    practice_id      uuid NOT NULL REFERENCES practices (practice_id),
    client_id        uuid NOT NULL REFERENCES users (user_id),
    kind             text NOT NULL DEFAULT 'created' CHECK (kind IN ('created')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz
);

CREATE INDEX client_events_due_idx ON client_events (next_attempt_at, event_id) WHERE done_at IS NULL;
CREATE INDEX client_events_done_idx ON client_events (done_at) WHERE done_at IS NOT NULL;

-- ListClients: a practice's clients in name order (keyset pagination).
CREATE INDEX users_practice_role_sort_idx ON users (practice_id, role, sort_name, user_id);
