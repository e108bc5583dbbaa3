"""Freshness: how long from a dbt seed change to the API serving the changed record, with no step between.

Each round renames Jane Doe (user 12345) in the demo's users seed, launches the `dbt_build` job
through the Dagster webserver's GraphQL API, exactly as a click in the UI would, and polls the API
until the record carries the new name. The run builds dbt, then the models, checks, syncs and
collections that follow it, in that one run. The last round renames her back, and the seed file is
restored byte for byte whatever happens.

Each round is split by stage, from the run's timings: launch → dequeued, → run start (the run
worker process), run start → dbt step start, dbt, dbt done → sync start (the model and its
checks), the sync, sync done → served. The report gives every round and the worst one.

When the demo is already up (`larder up --detach`), its own seed file is changed. Otherwise the
bench copies the demo project (config, sync files, dbt project) to a temporary folder and runs
`larder up --detach` on the copy, so nothing in the working tree changes; it stops it afterwards.

    python -m bench.freshness [--rounds 2] [--timeout 120]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from orchestration.config.load import REPO_ROOT, larder_home, load_project
from orchestration.machine import executable, listening

SEED = Path("seeds") / "users.csv"
USER_ID = "12345"
DAGSTER_PORT = 3000
GRAPHQL = f"http://127.0.0.1:{DAGSTER_PORT}/graphql"
CODE_LOCATION = {"repositoryLocationName": "larder", "repositoryName": "__repository__"}
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } ... on PythonError { message } } }
"""
RUN_STEPS = """
query Steps($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status startTime stepStats { stepKey startTime endTime }
      eventConnection { events { __typename ... on RunStartingEvent { timestamp } } }
    }
  }
}
"""
DBT_STEP = "larder_dbt_models"
SYNC_STEP = "sync__customer_profiles_sync"  # the sync that serves full_name
STAGES = (
    ("queue", "launch → the daemon takes the run off the queue and starts it"),
    ("worker", "→ the run starts (run worker process, code location import)"),
    ("setup", "run start → dbt starts (resources, plan)"),
    ("dbt", "dbt build"),
    ("model", "dbt done → sync starts (model, checks)"),
    ("sync", "sync"),
    ("serve", "sync done → served"),
)
LOADED = "query Loaded { repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
POLL_SECONDS = 0.2


@dataclass
class Round:
    """One seed change, as epoch timestamps: launched, the dbt and sync steps, and served."""

    name: str
    launched: float
    served: float
    dequeued: float | None = None
    run_start: float | None = None
    dbt_start: float | None = None
    dbt_end: float | None = None
    sync_start: float | None = None
    sync_end: float | None = None

    @property
    def total_seconds(self) -> float:
        return self.served - self.launched

    @property
    def after_dbt_seconds(self) -> float | None:
        return None if self.dbt_end is None else self.served - self.dbt_end

    def stages(self) -> dict[str, float | None]:
        """Seconds per stage; None when the run did not hold that step (e.g. a sync run by the sensor)."""
        points = [self.launched, self.dequeued, self.run_start, self.dbt_start, self.dbt_end, self.sync_start, self.sync_end, self.served]
        return {
            name: (None if start is None or end is None else round(end - start, 2))
            for (name, _), start, end in zip(STAGES, points, points[1:])
        }

    def as_dict(self) -> dict:
        after = self.after_dbt_seconds
        return {"total_seconds": round(self.total_seconds, 2),
                "after_dbt_seconds": None if after is None else round(after, 2), "stages": self.stages()}


@dataclass(frozen=True)
class Demo:
    """Where the running demo's configuration, runtime folder and users seed are."""

    env: dict[str, str]
    seeds: Path

    @property
    def config(self) -> Path:
        return Path(self.env.get("LARDER_CONFIG") or REPO_ROOT / "orchestration" / "larder.yaml")

    @property
    def home(self) -> Path:
        return Path(self.env["LARDER_HOME"]) if "LARDER_HOME" in self.env else larder_home()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="seed changes to time (2 or more); the last restores the name")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each change")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be 2 or more: the last round renames Jane back, which needs a change before it")
    with _running_demo() as demo:
        _wait_for_code_location(args.timeout)
        original = demo.seeds.read_bytes()
        try:
            rounds = _measure(demo, original, args.rounds, args.timeout)
        finally:
            demo.seeds.write_bytes(original)
    _report(rounds)
    return 0


@contextmanager
def _running_demo() -> Iterator[Demo]:
    if _dagster_up():
        yield Demo({}, REPO_ROOT / "dbt_project" / SEED)
        return
    with tempfile.TemporaryDirectory(prefix="larder-freshness-") as folder:
        demo = _copy_of_demo(Path(folder))
        _refuse_taken_ports(demo)
        env = {**os.environ, **demo.env}
        env.pop("DAGSTER_HOME", None)  # `larder up` puts it under the copy's runtime folder
        env.pop("LARDER_WAREHOUSE_PATH", None)
        print(f"freshness: starting a copy of the demo in {folder} (larder up --detach)", flush=True)
        try:
            subprocess.run([executable("larder"), "up", "--detach"], check=True, cwd=REPO_ROOT, env=env)
            yield demo
        finally:
            subprocess.run([executable("larder"), "down"], check=False, cwd=REPO_ROOT, env=env)


def _copy_of_demo(folder: Path) -> Demo:
    """The demo's larder.yaml, sync files and dbt project (parsed) copied under `folder`."""
    dbt = folder / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", dbt, ignore=shutil.ignore_patterns("target", "logs"))
    shutil.copytree(REPO_ROOT / "orchestration" / "syncs", folder / "orchestration" / "syncs")
    shutil.copy(REPO_ROOT / "orchestration" / "larder.yaml", folder / "orchestration" / "larder.yaml")
    subprocess.run(
        [executable("dbt"), "parse", "--quiet", "--profiles-dir", ".", "--project-dir", "."],
        check=True, cwd=dbt, env={**os.environ, "LARDER_WAREHOUSE_PATH": str(folder / "home" / "warehouse.duckdb")},
    )
    env = {"LARDER_CONFIG": str(folder / "orchestration" / "larder.yaml"), "LARDER_HOME": str(folder / "home")}
    return Demo(env, dbt / SEED)


def _refuse_taken_ports(demo: Demo) -> None:
    """`larder up` binds fixed ports: stop here, rather than run into whatever holds one of them."""
    project = load_project(demo.config)
    ports = {DAGSTER_PORT} | {project.regions[r].port for r in project.enabled_regions} | {
        int(server.rpartition(":")[2]) for r in project.enabled_regions for server in project.regions[r].servers
    }
    taken = sorted(port for port in ports if listening(port))
    if taken:
        raise SystemExit(f"freshness: port(s) {', '.join(map(str, taken))} already in use; `larder up` needs them free")


def _measure(demo: Demo, original: bytes, count: int, timeout: float) -> list[Round]:
    api = _api(demo)
    original_name = _full_name(original)
    rounds = []
    for number in range(1, count + 1):
        name = original_name if number == count else f"Jane Fresh{number} Doe"
        demo.seeds.write_bytes(_renamed(original, name))
        rounds.append(_one_round(api, name, timeout))
        print(f"freshness: round {number}: {rounds[-1].total_seconds:.1f} s to serve {name!r}", flush=True)
    return rounds


def _one_round(api: tuple[str, dict[str, str]], name: str, timeout: float) -> Round:
    url, headers = api
    launched = time.time()
    run_id = _launch_dbt_build()
    deadline = launched + timeout
    while time.time() < deadline:
        response = requests.get(url, headers=headers, timeout=5)
        if response.status_code == 200 and response.json().get("full_name") == name:
            served = time.time()
            return _with_step_times(Round(name, launched, served), run_id, deadline)
        if _run_status(run_id) in FINISHED - {"SUCCESS"}:
            raise SystemExit(f"freshness: the dbt_build run {run_id} failed; see the Dagster UI")
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"freshness: the API did not serve {name!r} within {timeout:.0f} s of launching dbt_build")


def _with_step_times(measured: Round, run_id: str, deadline: float) -> Round:
    """Once the run is over, read when its dbt and sync steps started and ended."""
    while time.time() < deadline:
        run = _graphql(RUN_STEPS, {"runId": run_id})["runOrError"]
        if run.get("status") in FINISHED:
            steps = {step["stepKey"]: step for step in run.get("stepStats") or []}
            dbt, sync = steps.get(DBT_STEP, {}), steps.get(SYNC_STEP, {})
            measured.run_start = run.get("startTime")
            measured.dequeued = _taken_off_queue_at(run)
            measured.dbt_start, measured.dbt_end = dbt.get("startTime"), dbt.get("endTime")
            measured.sync_start, measured.sync_end = sync.get("startTime"), sync.get("endTime")
            return measured
        time.sleep(POLL_SECONDS)
    return measured


def _taken_off_queue_at(run: dict) -> float | None:
    events = (run.get("eventConnection") or {}).get("events") or []
    stamps = [float(e["timestamp"]) / 1000 for e in events if e.get("__typename") == "RunStartingEvent"]
    return stamps[0] if stamps else None


def _launch_dbt_build() -> str:
    params = {"selector": {**CODE_LOCATION, "jobName": "dbt_build"}, "runConfigData": {}}
    answer = _graphql(LAUNCH, {"params": params})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"freshness: launching dbt_build failed: {answer}")
    return answer["run"]["runId"]


def _run_status(run_id: str) -> str:
    return _graphql(RUN_STATUS, {"runId": run_id})["runOrError"].get("status", "UNKNOWN")


def _graphql(query: str, variables: dict) -> dict:
    answer = requests.post(GRAPHQL, json={"query": query, "variables": variables}, timeout=30).json()
    if "errors" in answer:
        raise SystemExit(f"freshness: GraphQL error: {answer['errors']}")
    return answer["data"]


def _api(demo: Demo) -> tuple[str, dict[str, str]]:
    """The first region's lookup URL for user 12345, with the demo key `larder up` wrote."""
    project = load_project(demo.config)
    region = project.regions[project.enabled_regions[0]]
    secret = (demo.home / "demo-api-key").read_text().strip()
    url = f"http://{region.host}:{region.port}/v1/collections/customers/records/user_id/{USER_ID}"
    return url, {"Authorization": f"Bearer {secret}"}


def _renamed(seed: bytes, name: str) -> bytes:
    """The seed with the user's full_name replaced, every other byte as it was."""
    lines = seed.decode().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(f"{USER_ID},"):
            row = next(csv.reader([line]))
            row[1] = name
            ending = line[len(line.rstrip("\r\n")):]
            out = io.StringIO()
            csv.writer(out, lineterminator=ending).writerow(row)
            lines[i] = out.getvalue()
            return "".join(lines).encode()
    raise SystemExit(f"freshness: user {USER_ID} is not in the users seed")


def _full_name(seed: bytes) -> str:
    for row in csv.DictReader(io.StringIO(seed.decode())):
        if row["user_id"] == USER_ID:
            return row["full_name"]
    raise SystemExit(f"freshness: user {USER_ID} is not in the users seed")


def _wait_for_code_location(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _graphql(LOADED, {})["repositoriesOrError"].get("nodes"):
            return
        time.sleep(1)
    raise SystemExit("freshness: the Dagster webserver did not load the larder code location")


def _dagster_up() -> bool:
    try:
        return requests.get(GRAPHQL.removesuffix("graphql") + "server_info", timeout=2).ok
    except requests.ConnectionError:
        return False


def _report(rounds: list[Round]) -> None:
    print("\nfreshness: seed change → record served by the API (dbt_build launched through Dagster), seconds")
    for name, meaning in STAGES:
        print(f"  {name:<7}{meaning}")
    header = "".join(f"{name:>8}" for name, _ in STAGES)
    print(f"  {'round':<7}{header}{'after dbt':>11}{'total':>8}")
    for number, r in enumerate(rounds, 1):
        print(f"  {number:<7}{_row(r)}")
    worst = max(rounds, key=lambda r: r.total_seconds)
    print(f"  {'worst':<7}{_row(worst)}   (round {rounds.index(worst) + 1})")
    print(f"  targets: ≤ 10 s after dbt, ≤ 15 s from the click; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("freshness-json: " + json.dumps({"rounds": [r.as_dict() for r in rounds], "worst": worst.as_dict(),
                                           "load_average": round(os.getloadavg()[0], 1)}))


def _row(r: Round) -> str:
    stages = "".join(f"{_seconds(value):>8}" for value in r.stages().values())
    return f"{stages}{_seconds(r.after_dbt_seconds):>11}{_seconds(r.total_seconds):>8}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
