import warnings
from collections.abc import Iterator
from typing import Any

import crochet
import pytest
from twisted.logger import globalLogPublisher

pytest_plugins = ["tests.pg"]

warnings.filterwarnings("ignore", message=".*isSet.*", category=DeprecationWarning)

# pytest-twisted runs the reactor; crochet must use it, not start its own.
crochet.no_setup()


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test, in order."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)
