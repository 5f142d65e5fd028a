"""``python -m services.notify`` serves; ``python -m services.notify requeue ...`` is for operators (cli.py)."""

import sys

from services.common.main import run_service
from services.notify.app import create_service
from services.notify.config import NotifyConfig

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from services.notify.cli import main

        sys.exit(main(sys.argv[1:]))
    run_service("notify", NotifyConfig.load, create_service)
