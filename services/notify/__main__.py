"""``python -m services.notify``"""

from services.common.main import run_service
from services.notify.app import create_service
from services.notify.config import NotifyConfig

if __name__ == "__main__":
    run_service("notify", NotifyConfig.load, create_service)
