"""heap.py: only a daemon started from the command line freezes its heap, and then it does."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from pendra import heap


def test_settle_leaves_a_test_process_alone() -> None:
    before = gc.get_freeze_count()
    heap.settle()
    assert gc.get_freeze_count() == before


def test_a_daemon_process_freezes_what_is_alive_once_it_settles() -> None:
    probe = ("import gc; from pendra import heap; heap.daemon_process(); "
             "assert gc.get_freeze_count() == 0; heap.settle(); print(gc.get_freeze_count())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60, check=True)
    assert int(done.stdout) > 1000
