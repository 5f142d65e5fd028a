-- Credentials (portal invitations, password reset): account notices that carry
-- a link. The link's token is kept only until the job finishes (then cleared).

ALTER TABLE notification_jobs ADD COLUMN link_token text NOT NULL DEFAULT '';
