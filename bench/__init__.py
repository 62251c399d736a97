"""The benchmark suite: every figure of BENCHMARKS.md, ours side by side with the baseline design.

    python -m bench            # or: make bench  (the full run, a few minutes)
    python -m bench --quick    # the smoke version the tests run

Everything runs on this machine against a real Redis on loopback (an embedded
redis-server unless --redis-url is given) and the real standalone host.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The product under test: this repository, or (BENCH_PRODUCT_ROOT) a patched copy of it, to measure a change
# with the same bench before making it.
PRODUCT_ROOT = Path(os.environ.get("BENCH_PRODUCT_ROOT") or ROOT).resolve()
sys.path.insert(0, str(PRODUCT_ROOT))
