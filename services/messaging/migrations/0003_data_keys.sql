-- Per-practice data keys for message bodies, each wrapped by a key-encryption
-- key: AWS KMS in production ("kms:<key arn>"), the local key file in development
-- ("local:<fingerprint>"). Versions start at 1; the highest seals new bodies.
CREATE TABLE data_keys (
    practice_id  text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    wrapped_key  bytea NOT NULL,
    kek          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (practice_id, version)
);

-- Messages written before this migration were sealed directly with the key file
-- and labelled version 1. They become version 0, "the legacy key file", which the
-- service still opens while the key file is configured; every version >= 1 is now
-- a practice's own wrapped data key.
UPDATE messages SET key_version = 0 WHERE key_version = 1;
