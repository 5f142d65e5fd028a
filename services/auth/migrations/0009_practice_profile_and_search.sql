-- Issue 11: a practice's profile (its time zone and how clients reach it), clients' dates
-- of birth, and directory search that lists matches at the start of a word first.

-- Practices created before this migration are in America/New_York (the default of auth's
-- CONFIDANT_AUTH_DEFAULT_TIME_ZONE); auth names the zone of every practice it creates.
ALTER TABLE practices
    ADD COLUMN time_zone text NOT NULL DEFAULT 'America/New_York' CHECK (time_zone <> ''),
    -- E.164 or empty (no number).
    ADD COLUMN contact_phone text NOT NULL DEFAULT ''
        CHECK (contact_phone = '' OR contact_phone ~ '^\+[1-9][0-9]{6,14}$'),
    -- Lower-cased like users.email, or empty (no address).
    ADD COLUMN contact_email text NOT NULL DEFAULT '' CHECK (contact_email = lower(contact_email));

-- Clients only, where known; "not in the future" is checked by auth (it depends on the
-- practice's time zone, which a CHECK cannot read).
ALTER TABLE users ADD COLUMN date_of_birth date
    CHECK (date_of_birth IS NULL OR (role = 'client' AND date_of_birth >= DATE '1900-01-01'));

-- The folded words of a text, each preceded by one space: ' alex chen alex client test' for
-- 'Álex Chen' <alex@client.test>. A query word starts a word when ' ' || its own folded words
-- occur in it, so "al" ranks Alex, Alvarez and al@… before Kowalski. Punctuation (LIKE's
-- wildcards included) becomes a space in both, so the pattern needs no escaping.
CREATE FUNCTION search_words(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT ' ' || btrim(regexp_replace(public.fold_for_search(value), '[[:space:][:punct:]]+', ' ', 'g')) $$;

ALTER TABLE users ADD COLUMN search_words text
    GENERATED ALWAYS AS (public.search_words(display_name || ' ' || email)) STORED;
