"""The benchmark suite: every figure of BENCHMARKS.md, ours side by side with the baseline design.

    python -m bench            # or: make bench  (the full run, about 12 minutes on 2 cores)
    python -m bench --quick    # the smoke version the tests run

Everything runs on this machine against a real Redis on loopback (an embedded
redis-server unless --redis-url is given) and the real standalone host.
"""

from __future__ import annotations

from testing import ROOT

__all__ = ["ROOT"]
