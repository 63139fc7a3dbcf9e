"""Assignment graded by nbgrader: the reference, the release, every negative control, the games."""

import pytest
from test_assignments import check_reference_release_controls_and_gaming


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reference_release_controls_and_gaming(tmp_path):
    check_reference_release_controls_and_gaming(tmp_path, "a5_sharding")
