"""Runs the freshness measurement (bench/freshness.py, from the orchestration work) if it exists.

It is run as `python -m bench.freshness` in a subprocess (it starts the demo when it is not up);
its "round N: X s" lines and its `freshness-json:` line (every round split by stage, and the worst)
are read from its output; the worst round is the figure checked against the target.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
from typing import Any

from bench.services import REPO_ROOT

TIMEOUT_SECONDS = 420
ROUND = re.compile(r"round (\d+): ([\d.]+) s")
STAGES = re.compile(r"^freshness-json: (.*)$", re.MULTILINE)


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
    staged = STAGES.search(output)
    detail = json.loads(staged.group(1)) if staged else {}
    worst = detail.get("worst", {})
    return {"available": True, "seconds": max(rounds), "rounds_seconds": rounds,
            "after_dbt_seconds": worst.get("after_dbt_seconds"), "stages": worst.get("stages"),
            "rounds": detail.get("rounds"), "load_average": detail.get("load_average")}
