-- Sign-in throttling: consecutive failures per account, attempts per client
-- address, and the outbox of account notices (the lock email) relayed to notify.

-- One row per account that has failed recently. The key is the user id for a
-- known account and 'email:' || sha256(email) for an email no account has, so
-- unknown emails are counted and throttled exactly like real ones.
CREATE TABLE sign_in_throttle (
    account_key    text PRIMARY KEY,
    failures       integer NOT NULL DEFAULT 0 CHECK (failures >= 0),  -- consecutive
    blocked_until  timestamptz,  -- attempts are refused until then (a delay or a lock)
    locked         boolean NOT NULL DEFAULT false,  -- the block is a lock, not a delay
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sign_in_throttle_updated_idx ON sign_in_throttle (updated_at);

-- Attempts (sign-in and magic-link redemption) per client address per fixed window.
CREATE TABLE address_attempts (
    client_address  text NOT NULL,
    window_start    timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (client_address, window_start)
);

CREATE INDEX address_attempts_window_idx ON address_attempts (window_start);

-- Written in the transaction that locks an account; a background relay hands
-- each row to notify (dedupe key 'auth-notice:<notice_id>') until it is accepted.
CREATE TABLE account_notices (
    notice_id        bigserial PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES users (user_id),
    kind             text NOT NULL CHECK (kind IN ('locked')),
    lock_minutes     integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);

CREATE INDEX account_notices_due_idx ON account_notices (next_attempt_at, notice_id) WHERE sent_at IS NULL;
