"""``python -m services.auth``: the auth service; ``... migrate`` only applies its migrations."""

from services.auth.app import MIGRATIONS, create_service
from services.auth.config import AuthConfig
from services.common.main import run_service

if __name__ == "__main__":
    run_service("auth", AuthConfig.load, create_service, migrations=MIGRATIONS)
