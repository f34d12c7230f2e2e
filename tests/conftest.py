"""Unit tests run single-threaded, as the notebooks do (torch's default 2 threads stall small ops)."""

import pytest

from memtutor.utils import set_threads


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    set_threads()
