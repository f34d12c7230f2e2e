"""Test-session glue shared by tests/ and notebooks/.

pytest-xdist runs with ``--dist loadgroup``. Every test is put in the group of its file, so all cells
of a notebook stay on one worker and one kernel (what ``--dist loadfile`` would do), with one
exception: the student-edition runs (tests/test_student_edition.py) form one group per notebook, so
these long runs spread over the workers.
"""

from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        group = path.name
        if path.name == "test_student_edition.py" and hasattr(item, "callspec"):
            group = f"student-{item.callspec.id}"
        item.add_marker(pytest.mark.xdist_group(group))
