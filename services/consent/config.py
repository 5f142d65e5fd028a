"""Consent's configuration."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from services.common.config import DEFAULT_PORTS, PREFIX, CommonConfig, ConfigError, Env, service_target


@dataclass(frozen=True)
class ConsentConfig:
    common: CommonConfig
    auth_target: str
    # Region assumed for numbers typed without a country code.
    default_region: str

    @classmethod
    def load(cls, env: Env) -> ConsentConfig:
        region = env.str("CONSENT_DEFAULT_REGION", "US").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"{PREFIX}CONSENT_DEFAULT_REGION must be a two-letter region code such as US, not {region!r}.")
        return cls(
            common=CommonConfig.load("consent", env, DEFAULT_PORTS["consent"]),
            auth_target=service_target(env, "auth"),
            default_region=region,
        )
