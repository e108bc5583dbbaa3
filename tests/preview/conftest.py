"""The preview renders against a real served region: the serving tests' stack (memcached + gunicorn)."""

from __future__ import annotations

import pytest

from tests.serving.conftest import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("preview-stack")).start()
    yield running
    running.stop()
