"""``python -m services.messaging``: the messaging service; ``... migrate`` only applies its migrations."""

from services.common.main import run_service
from services.messaging.app import MIGRATIONS, create_service
from services.messaging.config import MessagingConfig

if __name__ == "__main__":
    run_service("messaging", MessagingConfig.load, create_service, migrations=MIGRATIONS)
