"""travelplanner/http_server.py: the connection cap leaves file descriptors for everything else."""

from __future__ import annotations

import pytest

from travelplanner.http_server import connection_cap


@pytest.mark.parametrize(("configured", "open_files", "cap"), [
    (10_000, 1_048_576, 10_000),
    (10_000, 20_000, 10_000),
    (10_000, 1_024, 820),  # a fifth kept back
    (10_000, 256, 156),  # at least 100 kept back
    (50, 1_024, 50),
    (10_000, 50, 1),
    (10_000, None, 10_000),  # no limit known (Windows)
])
def test_the_cap_fits_under_the_open_file_limit(configured: int, open_files: int | None, cap: int) -> None:
    assert connection_cap(configured, open_files) == cap
