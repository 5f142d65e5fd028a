"""``python -m services.notify`` serves; ``... migrate`` only migrates; ``... requeue ...`` is for operators (cli.py)."""

import sys

from services.common.main import run_service
from services.notify.app import MIGRATIONS, create_service
from services.notify.config import NotifyConfig

if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1:] != ["migrate"]:
        from services.notify.cli import main

        sys.exit(main(sys.argv[1:]))
    run_service("notify", NotifyConfig.load, create_service, migrations=MIGRATIONS)
