"""Side-by-side benchmarks of CloudPyPI against pypiserver, devpi-server and nginx.

``python -m benchmarks run`` (see benchmarks/README.md). Everything runs on
127.0.0.1; peers, data and logs live under ``benchmarks/.work/``, results
under ``benchmarks/results/``.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
#: The repository (CloudPyPI's source, and tests/ whose service helpers are reused).
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work")
RESULTS = os.path.join(HERE, "results")
