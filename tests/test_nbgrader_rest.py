"""The nbgrader round trip of the notebooks with the longest cells (see test_nbgrader.py)."""

import pytest
from test_nbgrader import HEAVY, round_trip


@pytest.mark.slow  # generate_assignment, then three notebook executions under autograde
@pytest.mark.parametrize("name", HEAVY)
def test_nbgrader_round_trip(name, tmp_path):
    round_trip(name, tmp_path)
