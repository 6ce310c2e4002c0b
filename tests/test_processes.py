"""dimerec.processes: the one reader of Linux's /proc (lock owners, the PNG export's kill, torchrun's workers)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dimerec.processes import descendants, start_time, stat_fields

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")


def test_stat_fields_read_past_a_command_name_with_spaces_and_parentheses():
    # a comm such as "x) (y" (set by prctl PR_SET_NAME, 15) would shift every field of a naive split on spaces
    child = subprocess.Popen([sys.executable, "-c", "import ctypes, time; "
                              "ctypes.CDLL(None).prctl(15, b'x) (y', 0, 0, 0); time.sleep(30)"])
    try:
        deadline = time.time() + 10
        while "x) (y" not in Path(f"/proc/{child.pid}/stat").read_text() and time.time() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{child.pid}/stat").read_text().startswith(f"{child.pid} (x) (y) ")
        fields = stat_fields(child.pid)
        assert fields[1] == str(os.getpid())  # proc(5) field 4: the parent
        assert start_time(child.pid) == fields[19] != start_time(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert stat_fields(child.pid) is None and start_time(child.pid) is None  # reaped: gone


def test_descendants_finds_grandchildren_in_a_session_of_their_own():
    # the shape of kaleido's browser: a grandchild that left its parent's process group and session
    child = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], "
                              "start_new_session=True); time.sleep(30)"])
    try:
        deadline = time.time() + 10
        while len(found := descendants(child.pid)) < 1 and time.time() < deadline:
            time.sleep(0.1)
        assert len(found) == 1 and stat_fields(found[0])[1] == str(child.pid)
        assert child.pid in descendants(os.getpid()) and found[0] in descendants(os.getpid())
    finally:
        for pid in [*descendants(child.pid), child.pid]:
            os.kill(pid, 9)
        child.wait()
