"""Consent's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers

from services.common.aws import AwsSettings
from services.common.config import DEFAULT_PORTS, PREFIX, CommonConfig, ConfigError, Env, service_target

# Where texts leave: "none" asks no provider anything (development: the mailbox);
# "sns" asks Amazon SNS whether a re-consented number is still opted out there.
SMS_PROVIDER_NONE = "none"
SMS_PROVIDER_SNS = "sns"
SMS_PROVIDERS = (SMS_PROVIDER_NONE, SMS_PROVIDER_SNS)
DEFAULT_APP_ROLE = "confidant_consent_app"


@dataclass(frozen=True)
class ConsentConfig:
    common: CommonConfig
    auth_target: str
    # Region assumed for numbers typed without a country code.
    default_region: str = "US"
    # The database role consent's queries run as: it may not UPDATE, DELETE or TRUNCATE
    # the ledger or the audit trail (migration 0002). Empty: run as the login user.
    database_app_role: str = DEFAULT_APP_ROLE
    sms_provider: str = SMS_PROVIDER_NONE
    aws: AwsSettings = field(default_factory=AwsSettings)
    # Whom to ask, in HELP and the automatic answer, when the practice gives no phone or
    # email (or cannot be known); never a person's details.
    help_contact: str = "your practice"
    # The deadline of each call to the SMS provider.
    provider_timeout_seconds: float = 5.0

    @classmethod
    def load(cls, env: Env) -> ConsentConfig:
        region = env.str("CONSENT_DEFAULT_REGION", "US").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"{PREFIX}CONSENT_DEFAULT_REGION must be a two-letter region code such as US, not {region!r}.")
        provider = env.str("CONSENT_SMS_PROVIDER", SMS_PROVIDER_NONE).strip().lower()
        if provider not in SMS_PROVIDERS:
            raise ConfigError(f"{PREFIX}CONSENT_SMS_PROVIDER must be one of {', '.join(SMS_PROVIDERS)}, not {provider!r}.")
        help_contact = env.str("CONSENT_HELP_CONTACT", "your practice").strip()
        if not help_contact or len(help_contact) > 100:
            raise ConfigError(f"{PREFIX}CONSENT_HELP_CONTACT must be 1 to 100 characters (a phone number, an address).")
        return cls(
            common=CommonConfig.load("consent", env, DEFAULT_PORTS["consent"]),
            auth_target=service_target(env, "auth"),
            default_region=region,
            database_app_role=env.app_role("CONSENT_DATABASE_APP_ROLE", DEFAULT_APP_ROLE),
            sms_provider=provider,
            aws=AwsSettings.load(env),
            help_contact=help_contact,
            provider_timeout_seconds=env.positive_float("CONSENT_PROVIDER_TIMEOUT_SECONDS", 5.0),
        )
