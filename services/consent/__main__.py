"""``python -m services.consent``"""

from services.common.main import run_service
from services.consent.app import create_service
from services.consent.config import ConsentConfig

if __name__ == "__main__":
    run_service("consent", ConsentConfig.load, create_service)
