"""Suite-wide markers: notebooks (nbval), the browser test and the installed-wheel test count as slow.

``./run.sh test`` runs everything; ``./run.sh test -m "not slow"`` is the quick developer loop.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
