-- Auth: practices, users, sessions, magic links and the audit trail.

CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- unaccent() is only STABLE (its dictionary could change), so it cannot be used
-- in an index or a generated column directly. Naming the dictionary explicitly
-- makes the result fixed, which is the documented way to wrap it as IMMUTABLE.
CREATE FUNCTION fold_for_search(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, value)) $$;

CREATE TABLE practices (
    practice_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (name <> ''),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    user_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    practice_id    uuid NOT NULL REFERENCES practices (practice_id),
    role           text NOT NULL
                   CHECK (role IN ('owner', 'clinician', 'team_member', 'client', 'service_account')),
    -- Stored lower-cased, so the unique index makes emails unique whatever their case.
    email          text NOT NULL CHECK (email = lower(email) AND email <> ''),
    display_name   text NOT NULL CHECK (display_name <> ''),
    password_hash  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- What the directory search matches: case- and accent-folded name and email.
    search_text    text GENERATED ALWAYS AS (fold_for_search(display_name || ' ' || email)) STORED,
    sort_name      text GENERATED ALWAYS AS (fold_for_search(display_name)) STORED
);

CREATE UNIQUE INDEX users_email_key ON users (email);
-- Directory listing in name order within a practice (the empty-query page).
CREATE INDEX users_practice_sort_idx ON users (practice_id, sort_name, user_id);
-- Partial matches anywhere in names and emails (LIKE '%...%').
CREATE INDEX users_search_trgm_idx ON users USING gin (search_text gin_trgm_ops);

CREATE TABLE sessions (
    session_hash  bytea PRIMARY KEY,  -- sha256 of the session token; the token itself is never stored
    user_id       uuid NOT NULL REFERENCES users (user_id),
    kind          text NOT NULL CHECK (kind IN ('full', 'magic_link')),
    conversation_id text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,  -- the absolute end, whatever the activity
    revoked_at    timestamptz
);

CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE magic_links (
    token_hash      bytea PRIMARY KEY,  -- sha256 of the link's token
    user_id         uuid NOT NULL REFERENCES users (user_id),
    conversation_id text NOT NULL CHECK (conversation_id <> ''),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);

CREATE INDEX magic_links_expires_idx ON magic_links (expires_at);

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
