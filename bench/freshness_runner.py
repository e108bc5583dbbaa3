"""Runs the freshness measurement (bench/freshness.py, from the orchestration work) if it exists.

It is run as `python -m bench.freshness` in a subprocess (it starts the demo when it is not up);
its "round N: X s" lines are read from its output, and the worst round is the figure checked
against the target.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
from typing import Any

from bench.services import REPO_ROOT

TIMEOUT_SECONDS = 420
ROUND = re.compile(r"round (\d+): ([\d.]+) s")


def run_freshness(*, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("bench.freshness") is None:
        log("freshness: not available yet")
        return {"available": False, "reason": "bench/freshness.py is not there yet"}
    log("freshness: running python -m bench.freshness")
    process = subprocess.Popen([sys.executable, "-m", "bench.freshness"], cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGKILL: its `finally` restores the seed file and stops the demo it started.
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
        return {"available": True, "error": f"did not finish within {TIMEOUT_SECONDS} s"}
    rounds = [float(seconds) for _, seconds in ROUND.findall(output)]
    if process.returncode != 0 or not rounds:
        return {"available": True, "error": f"exited with {process.returncode}", "output": output.strip().splitlines()[-5:]}
    return {"available": True, "seconds": max(rounds), "rounds_seconds": rounds}
