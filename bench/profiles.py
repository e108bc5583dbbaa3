"""`python -m bench profile sync|serving`: py-spy profiles of the per-row sync path and of the API.

Each profile is recorded by py-spy in collapsed-stack form (bench/results/profile-*.folded, which
speedscope.app and flamegraph.pl open) and summarized into bench/results/profile-*.txt: the
functions with the most samples, by own time and by total time. py-spy leaves out idle threads,
though a process blocked in a socket call (memcached, a client's close) may still be sampled.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench import data, serving
from bench.loadgen import run_wrk, warm_up
from bench.report import RESULTS_DIR
from bench.services import REGION, REPO_ROOT, BenchProject, HttpServer, bench_memcached, run_measured
from orchestration.machine import free_port

TOP = 30
# The API's metrics thread asleep between flushes: py-spy samples it as running (its sleep is a C
# call, so the Python leaf is the loop itself); counting it would hide a fifth of the real work.
IDLE_LEAF = "RequestTally._flush_forever "
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profile")
    parser.add_argument("target", choices=("sync", "serving"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = profile_sync(args.out, quick=args.quick) if args.target == "sync" else profile_serving(args.out, quick=args.quick)
    for path in written:
        print(f"wrote {path}")
    print(written[0].read_text()[:3000])
    return 0


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


def profile_sync(out: Path, *, quick: bool) -> list[Path]:
    """Full syncs (without and with a Liquid field) of a generated model under py-spy."""
    rows = 3_000 if quick else 30_000
    written = []
    for variant, liquid in (("plain", False), ("liquid", True)):
        name = f"profile_{variant}"
        with tempfile.TemporaryDirectory(prefix="larder-profile-") as tmp, \
                bench_memcached(memory_mb=max(256, rows * 2 * 700 // 1_000_000)) as memcached:
            project = BenchProject(Path(tmp), memcached.server)
            data.create_users(project.warehouse_path, rows, record_bytes=400)
            project.write([data.sync_spec(name, liquid=liquid)])
            folded = out / f"profile-sync-{variant}.folded"
            command = [py_spy(), "record", "--format", "raw", "--rate", "250", "--output", str(folded), "--",
                       *project.larder_command("sync", name)]
            run = run_measured(command, env=project.env(), cwd=project.root, timeout=1800).check("py-spy record")
            title = (f"full `larder sync` of {rows:,} rows × {len(data.COLUMNS)} columns "
                     f"({'with one Liquid field' if liquid else 'no Liquid'}); {run.wall_seconds:.1f} s wall under py-spy")
            written.append(_summarize(folded, out / f"profile-sync-{variant}.txt", title))
    return written


def profile_serving(out: Path, *, quick: bool) -> list[Path]:
    """The API's gunicorn workers under wrk load (64 connections, random keys), sampled by py-spy."""
    sizes = serving.QUICK if quick else serving.FULL
    records, seconds = (2_000, 3) if quick else (20_000, 15)
    with tempfile.TemporaryDirectory(prefix="larder-profile-") as tmp, bench_memcached(memory_mb=256) as memcached:
        project = BenchProject(Path(tmp), memcached.server)
        data.create_users(project.warehouse_path, records, record_bytes=sizes.record_bytes)
        project.write([data.sync_spec(serving.SYNC_NAME)])
        project.larder("sync", serving.SYNC_NAME, timeout=600).check("larder sync")
        secret = project.create_api_key()
        ids = project.root / "ids.txt"
        ids.write_text("".join(f"{i}\n" for i in range(records)))
        port = free_port()
        server = HttpServer("larder", project.larder_command("serve", "--region", REGION, "--bind", f"127.0.0.1:{port}"),
                            env=project.env(), port=port, log_path=project.root / "larder.log")
        folded = out / "profile-serving.folded"
        with server:
            path = f"/v1/collections/{serving.COLLECTION}/records/user_id/{{id}}"
            auth = f"Bearer {secret}"
            warm_up(server.base_url, path, ids, authorization=auth)
            load = threading.Thread(target=run_wrk, args=(server.base_url, path, ids),
                                    kwargs={"connections": 64, "seconds": seconds + 2, "authorization": auth})
            load.start()
            worker_pids = server.worker_pids()
            _record_workers(worker_pids, seconds, folded)
            load.join()
        title = (f"{len(worker_pids)} gunicorn workers of `larder serve` under wrk (64 connections, "
                 f"random keys of {records:,}) for {seconds} s")
        return [_summarize(folded, out / "profile-serving.txt", title)]


def _record_workers(pids: list[int], seconds: int, folded: Path) -> None:
    """Sample every worker (not the arbiter, which only waits) at once; one collapsed-stack file."""
    parts = [folded.with_suffix(f".{pid}") for pid in pids]
    recorders = [subprocess.Popen([py_spy(), "record", "--format", "raw", "--rate", "250", "--duration", str(seconds),
                                   "--pid", str(pid), "--output", str(part)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for pid, part in zip(pids, parts)]
    for recorder in recorders:
        recorder.wait(timeout=seconds + 60)
    folded.write_text("".join(part.read_text() for part in parts if part.exists()))
    for part in parts:
        part.unlink(missing_ok=True)


def _summarize(folded: Path, path: Path, title: str) -> Path:
    """The top functions by own and by total samples, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if frames[-1].startswith(IDLE_LEAF):
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [
        f"py-spy profile: {title}",
        f"{samples} samples at 250 Hz; {folded.name} has the stacks (open it in speedscope.app).",
        "Idle threads are left out, but a process blocked in a socket call (memcached recv, close) is",
        "still sampled: such rows are waiting, not computing.",
        "",
    ]
    for heading, counter in (("own time (the function itself)", own), ("total time (with what it calls)", total)):
        lines.append(f"Top {TOP} by {heading}:")
        lines += [f"  {100 * n / max(samples, 1):5.1f}%  {n:7d}  {name}" for name, n in counter.most_common(TOP)]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", f"{REPO_ROOT}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['function']} ({file})"
