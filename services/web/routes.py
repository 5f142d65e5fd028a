"""Every URL of the web edge in one place."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.web import (
    admin_views,
    api,
    client_views,
    credential_views,
    deliveries,
    devmailbox,
    events,
    inbound_sms,
    security_views,
    ses_feedback,
    views,
)
from services.web.config import WebConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"


def setup_routes(app: web.Application, config: WebConfig) -> None:
    r = app.router
    r.add_get("/healthz", views.healthz)
    r.add_get("/readyz", views.readyz)

    r.add_get("/sign-in", views.sign_in_form)
    r.add_post("/sign-in", views.sign_in)
    r.add_post("/sign-out", views.sign_out)
    # Two-step verification at sign-in, and the Security page.
    r.add_post("/sign-in/verify", security_views.verify_sign_in)
    r.add_post("/sign-in/enroll", security_views.enroll_at_sign_in)
    r.add_get("/account/security", security_views.security_page)
    r.add_post("/account/security/totp/begin", security_views.begin_enrollment)
    r.add_post("/account/security/totp/confirm", security_views.confirm_enrollment)
    r.add_post("/account/security/totp/disable", security_views.disable_totp)
    r.add_post("/account/security/practice", security_views.update_practice_security)
    r.add_get("/", views.staff_home)
    # The practice owner's Team and Audit trail pages.
    r.add_get("/account/team", admin_views.team_page)
    r.add_post("/account/team/invite", admin_views.invite)
    r.add_post("/account/team/{user_id}/invite", admin_views.invite_again)
    r.add_post("/account/team/{user_id}/role", admin_views.change_role)
    r.add_get("/account/team/{user_id}/deactivate", admin_views.deactivate_confirm)
    r.add_post("/account/team/{user_id}/deactivate", admin_views.deactivate)
    r.add_get("/account/audit", admin_views.audit_page)
    # The practice's clients (Clients, Client Info) and its messaging settings.
    r.add_get("/clients", client_views.clients_page)
    r.add_post("/clients", client_views.add_client)
    r.add_get("/clients/{client_id}", client_views.client_page)
    r.add_post("/clients/{client_id}", client_views.save_client)
    r.add_post("/clients/{client_id}/secure-messaging", client_views.client_secure_messaging)
    r.add_get("/settings", client_views.settings_page)
    r.add_post("/settings", client_views.save_settings)
    r.add_post("/settings/failed-alerts", client_views.requeue_failed_alerts)

    r.add_get("/m/{token}", views.magic_link_landing)
    r.add_post("/m/{token}", views.magic_link_redeem)

    r.add_get("/portal/sign-in", views.portal_sign_in_form)

    # Invitation and reset links, forgot password, change password.
    r.add_get("/credentials/{token}", credential_views.credential_link_landing)
    r.add_post("/credentials/{token}", credential_views.credential_link_use)
    r.add_get("/forgot-password", credential_views.forgot_password_form)
    r.add_post("/forgot-password", credential_views.forgot_password)
    r.add_get("/account/password", credential_views.change_password_form)
    r.add_post("/account/password", credential_views.change_password)
    r.add_get("/portal", views.portal_home)
    r.add_get("/portal/conversations/{conversation_id}", views.portal_conversation)
    r.add_post("/portal/conversations/{conversation_id}/messages", views.portal_send)

    r.add_get("/api/me", api.me)
    r.add_get("/api/conversations", api.list_conversations)
    r.add_post("/api/conversations", api.open_conversation)
    r.add_get("/api/conversations/{conversation_id}", api.get_conversation)
    r.add_get("/api/conversations/{conversation_id}/messages", api.list_messages)
    r.add_post("/api/conversations/{conversation_id}/messages", api.send_message)
    r.add_post("/api/conversations/{conversation_id}/read", api.mark_read)
    r.add_post("/api/conversations/{conversation_id}/archive", api.archive_conversation)
    r.add_get("/api/conversations/{conversation_id}/deliveries", deliveries.list_deliveries)
    r.add_get("/api/unread", api.unread)
    r.add_get("/api/directory", api.directory)
    r.add_get("/api/recent-contacts", api.recent_contacts)
    r.add_get("/api/clients", api.list_clients)
    r.add_post("/api/clients", api.create_client)
    r.add_get("/api/clients/{client_id}/secure-messaging", api.client_messaging)
    r.add_post("/api/clients/{client_id}/secure-messaging", api.client_messaging)
    r.add_get("/api/events", events.stream_events)

    # The providers' webhooks: each exists only while it is configured. Inbound SMS:
    if config.sns_topic_arns:
        r.add_post(inbound_sms.SNS_PATH, inbound_sms.sns_webhook)
    if config.twilio_auth_token:
        r.add_post(inbound_sms.TWILIO_PATH, inbound_sms.twilio_webhook)
    # Amazon SES delivery feedback (bounces, complaints) through SNS.
    if config.ses_topic_arns:
        r.add_post(ses_feedback.SES_PATH, ses_feedback.ses_webhook)

    if config.development:
        r.add_get("/dev/mailbox", devmailbox.mailbox_page)
        r.add_get("/dev/mailbox.json", devmailbox.mailbox_json)
        r.add_post("/dev/mailbox/sms-reply", devmailbox.sms_reply)

    r.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
