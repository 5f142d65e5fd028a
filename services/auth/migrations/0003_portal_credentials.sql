-- Client Portal credentials: invitation and password-reset links, and their
-- emails in the account-notice outbox.

-- One row per link. Only the sha256 of the token is stored. A new link of the
-- same purpose for the same person ends the older unused ones (expires_at = now()).
CREATE TABLE credential_links (
    link_id     bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    user_id     uuid NOT NULL REFERENCES users (user_id),
    purpose     text NOT NULL CHECK (purpose IN ('invitation', 'password_reset')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE INDEX credential_links_user_idx ON credential_links (user_id, purpose) WHERE used_at IS NULL;
CREATE INDEX credential_links_expires_idx ON credential_links (expires_at);

-- The outbox carries invitation and reset emails too. Their link's token must
-- reach notify, so it waits here only until the notice is handed over (then it
-- is set to NULL); credential_links itself never holds it.
ALTER TABLE account_notices DROP CONSTRAINT account_notices_kind_check;
ALTER TABLE account_notices ADD CONSTRAINT account_notices_kind_check
    CHECK (kind IN ('locked', 'invitation', 'password_reset'));
ALTER TABLE account_notices ADD COLUMN link_token text;
