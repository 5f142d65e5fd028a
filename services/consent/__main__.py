"""``python -m services.consent``: the consent service; ``... migrate`` only applies its migrations."""

from services.common.main import run_service
from services.consent.app import MIGRATIONS, create_service
from services.consent.config import ConsentConfig

if __name__ == "__main__":
    run_service("consent", ConsentConfig.load, create_service, migrations=MIGRATIONS)
