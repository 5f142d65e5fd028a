-- Signing keys for people's access tokens (rotated, published through
-- ListSigningKeys) and practice service accounts (client id + hashed secret).

-- The private key is stored as PEM (PKCS#8), NOT yet encrypted at rest: that
-- comes with the KMS work; until then this table is as sensitive as auth.key.
CREATE TABLE signing_keys (
    kid              text PRIMARY KEY CHECK (kid <> ''),
    private_key_pem  text NOT NULL,
    public_key_pem   text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The key signs from then on (after every verifier could see it published) ...
    activated_at     timestamptz NOT NULL,
    -- ... until it is retired; it stays published until retired_at + the longest token lifetime.
    retired_at       timestamptz
);

CREATE INDEX signing_keys_activated_idx ON signing_keys (activated_at DESC);

-- A service account is a users row (role 'service_account', a synthetic
-- unreachable email, no password) so it can be a message's sender that the
-- directory can name; its credentials live here. Deleting an account keeps the
-- users row (old messages still name it) and marks the credentials deleted.
CREATE TABLE service_accounts (
    user_id      uuid PRIMARY KEY REFERENCES users (user_id),
    practice_id  uuid NOT NULL REFERENCES practices (practice_id),
    client_id    text NOT NULL UNIQUE,
    -- sha256 of the 256-bit random secret; the secret itself is never stored.
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);

CREATE INDEX service_accounts_practice_idx ON service_accounts (practice_id) WHERE deleted_at IS NULL;
