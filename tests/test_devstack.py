"""`larder up` on a project of the tests' own, on free ports: Dagster picks up a new sync by itself and runs
it; `larder down` from another process stops everything and `up` exits.

One stack for the module (it takes a minute to start): the tests run in file order, `down` last.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.small_dbt import write_small_dbt_project
from tests.support import free_port
from tests.test_init import OUTSIDE

pytestmark = pytest.mark.slow

START_SECONDS = 300
# Generous: the daemon ticks every 5 s and a run starts a process; a busy shared machine is slow.
AUTOMATION_SECONDS = 180


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.config = root / "larder" / "larder.yaml"
        self.api_port, self.memcached_port, self.dagster_port = free_port(), free_port(), free_port()
        self.env = {**{k: v for k, v in os.environ.items() if k not in OUTSIDE},
                    "LARDER_API_PORT": str(self.api_port), "LARDER_MEMCACHED_PORT": str(self.memcached_port)}
        self.log = root / "up.log"
        self.process: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dagster(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    @property
    def ports(self) -> list[int]:
        return [self.api_port, self.memcached_port, self.dagster_port]

    def larder(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=300)

    def start(self) -> None:
        shop = write_small_dbt_project(self.root / "shop")
        init = self.larder("init", "--dbt-project", str(shop), "--dir", str(self.config.parent))
        assert init.returncode == 0, init.stdout + init.stderr
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestration.cli", "up", "--config", str(self.config),
             "--dagster-port", str(self.dagster_port)],
            cwd=self.root, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_SECONDS
        while "Larder is running." not in self.log.read_text():
            assert self.process.poll() is None, f"larder up exited:\n{self.log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"larder up did not start:\n{self.log.read_text()[-4000:]}"
            time.sleep(1)
        self.secret = (self.config.parent / ".larder" / "demo-api-key").read_text().strip()

    def lookup(self, path: str) -> requests.Response:
        return requests.get(self.api + path, headers={"Authorization": f"Bearer {self.secret}"}, timeout=10)

    def asset_keys(self) -> set[str]:
        answer = requests.post(f"{self.dagster}/graphql", json={"query": "{ assetNodes { assetKey { path } } }"},
                               timeout=30).json()
        return {"/".join(node["assetKey"]["path"]) for node in answer["data"]["assetNodes"]}

    def stop(self) -> None:
        self.larder("down", "--config", str(self.config))
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("devstack"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_up_serves_the_example_sync_of_a_new_project(stack):
    response = stack.lookup("/v1/collections/customers/records/customer_id/2")

    assert response.status_code == 200, response.text
    assert response.json() == {"customer_id": 2, "first_name": "Alan", "last_name": "Turing",
                               "email": "alan@example.com", "plan": "free", "summary": "2: Alan"}


def test_a_new_sync_file_appears_in_dagster_and_runs_its_first_materialization_by_itself(stack):
    (stack.config.parent / "syncs" / "plans.yaml").write_text(
        "name: plans\nmodel: {dbt: plans}\ncollection: plans\nprimary_index: plan_id\n"
        "fields: [{column: plan_id}, {column: members}]\ntrigger: {on_upstream_change: true}\n"
    )

    assets = eventually(stack.asset_keys, lambda keys: "sync/plans_sync" in keys, AUTOMATION_SECONDS)
    assert {"model/plans_model", "sync/plans_sync", "collection/plans"} <= assets  # no "Reload definitions" clicked
    served = eventually(lambda: stack.lookup("/v1/collections/plans/records/plan_id/pro"),
                        lambda response: response.status_code == 200, AUTOMATION_SECONDS)
    assert served.status_code == 200, served.text  # nobody ran it: the automation did
    assert served.json() == {"plan_id": "pro", "members": 2}


def test_larder_down_from_another_process_stops_everything_and_up_exits(stack):
    run = stack.config.parent / ".larder" / "run"
    groups = [int(pid_file.read_text()) for pid_file in run.glob("*.pid") if pid_file.stem != "up"]
    assert groups and stack.process.poll() is None

    started = time.monotonic()
    down = stack.larder("down", "--config", str(stack.config))
    exited = eventually(stack.process.poll, lambda code: code is not None, 60)
    print(f"larder down: {time.monotonic() - started:.1f} s until up exited")

    assert down.returncode == 0, down.stderr
    assert exited == 0, stack.log.read_text()[-2000:]
    assert "larder: stopping" in stack.log.read_text()
    assert [port for port in stack.ports if listening(port)] == []
    assert [pgid for pgid in groups if group_running(pgid)] == []
    assert list(run.glob("*.pid")) == []


def eventually(ask, until, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = ask()
        except requests.RequestException:
            answer = None
        if (answer is not None and until(answer)) or time.monotonic() > deadline:
            return answer
        time.sleep(1)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def group_running(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def test_up_refuses_a_port_another_stack_holds_before_starting_anything(project_factory, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    project = project_factory([], extra={"regions": {"main": {"servers": [f"127.0.0.1:{free_port()}"], "port": port}}})
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
    try:
        result = subprocess.run([sys.executable, "-m", "orchestration.cli", "up", "--config", str(project.path),
                                 "--dagster-port", str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    finally:
        taken.close()

    assert result.returncode != 0
    assert f"127.0.0.1:{port}, for the API main, is already in use" in result.stderr
    assert list((tmp_path / ".larder" / "run").glob("*.pid")) == []


def test_down_leaves_alone_a_process_that_took_the_number_of_a_stale_up_pid_file(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = tmp_path / ".larder" / "run"
    run.mkdir(parents=True)
    (run / "up.pid").write_text(f"{bystander.pid}\n")
    (tmp_path / "larder.yaml").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
    try:
        down = subprocess.run([sys.executable, "-m", "orchestration.cli", "down", "--config", str(tmp_path / "larder.yaml")],
                              env=env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert bystander.poll() is None
        assert not (run / "up.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()
