"""A child started with ``--parent-pid`` stops when that process is no longer its parent."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.services.live_server import ROOT

WATCH = """
import os, sys, threading
from pypi.server import orphan
orphaned = threading.Event()
orphan.watch_parent(int(sys.argv[1]), orphaned.set, interval=0.05)
sys.exit(0 if orphaned.wait(20) else 3)
"""


def test_the_poll_stops_a_process_whose_parent_is_not_the_one_named():
    # The pid named is not this child's parent (as after the parent died and init adopted it).
    named = 999_999_999
    done = subprocess.run([sys.executable, "-c", WATCH, str(named)], cwd=ROOT, timeout=60)
    assert done.returncode == 0


def test_the_watch_leaves_a_process_whose_parent_lives_running():
    code = WATCH.replace("orphaned.wait(20)", "not orphaned.wait(0.5)")
    done = subprocess.run([sys.executable, "-c", code, str(os.getpid())], cwd=ROOT, timeout=60)
    assert done.returncode == 0
