"""The proxy and its launcher on their own: nginx's own answers, the client's address, supervision.

`python -m serving.launcher` serves a small echo app (tests/serving/echo_app.py) exactly as
`larder serve` serves the API: nginx in front of gunicorn on a private unix socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from orchestration.config.load import REPO_ROOT
from serving.proxy import NginxProcess, ProxyLimits, render_config
from tests.support import free_port, wait_for_port


class Launched:
    """`python -m serving.launcher tests.serving.echo_app:app` on a free port."""

    def __init__(self, root: Path, workers: int = 2):
        self.port = free_port()
        self.pid_file = root / "serve.pid"
        self.log = root / "serve.log"
        env = {**os.environ, "LARDER_RUNTIME_DIR": str(root)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.launcher", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                 "--pid", str(self.pid_file), "--name", "echo", "tests.serving.echo_app:app"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:  # an answer from our echo app, not just something listening on the port
            assert self.process.poll() is None, f"the launcher exited: {self.log.read_text()[-2000:]}"
            try:
                if requests.get(f"{self.base}/whoami", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"nothing answered: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> list[int]:
        return [int(pid) for pid in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture
def launched(tmp_path):
    server = Launched(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def proxy_to(tmp_path):
    """nginx alone, proxying to a unix socket the test controls; `limits` shortened as needed."""
    started = []

    def start(upstream: Path, limits: ProxyLimits | None = None) -> str:
        port = free_port()
        runtime = tmp_path / f"nginx-{port}"
        runtime.mkdir()
        nginx = NginxProcess(runtime, render_config(listen=f"127.0.0.1:{port}", upstream=upstream,
                                                    runtime=runtime, limits=limits or ProxyLimits()))
        nginx.start()
        started.append(nginx)
        wait_for_port(port)
        return f"http://127.0.0.1:{port}"

    yield start
    for nginx in started:
        nginx.stop()


def test_with_no_worker_listening_the_proxy_answers_502_json(proxy_to, tmp_path):
    base = proxy_to(tmp_path / "nobody.sock")

    response = requests.get(f"{base}/v1/collections", timeout=10)

    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "bad_gateway"


def test_when_no_worker_answers_in_time_the_proxy_answers_504_json(proxy_to, tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:  # accepts connections, never answers
        silent.bind(str(path))
        silent.listen(16)
        base = proxy_to(path, ProxyLimits(read_timeout=1))

        response = requests.get(f"{base}/v1/collections", timeout=30)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "gateway_timeout"
    assert response.headers["Retry-After"] == "1"


def test_the_client_address_reaches_the_app_and_a_forged_one_does_not(launched):
    seen = requests.get(f"{launched.base}/whoami", timeout=10,
                        headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"}).json()

    assert seen["remote_addr"] == "127.0.0.1"
    assert seen["x_forwarded_for"] == "127.0.0.1"
    assert seen["forwarded"] is None


def test_a_get_whose_worker_is_killed_mid_request_is_answered_by_another(launched, tmp_path):
    marker = tmp_path / "slow-pids"
    answers = []
    request = threading.Thread(target=lambda: answers.append(
        requests.get(f"{launched.base}/slow", params={"marker": str(marker)}, timeout=30)))
    request.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    first_worker = int(marker.read_text().split()[0])

    os.kill(first_worker, signal.SIGKILL)
    request.join(timeout=30)

    assert answers and answers[0].status_code == 200
    assert answers[0].json()["pid"] != first_worker


def test_term_stops_the_proxy_and_the_workers_and_removes_the_pid_file(launched):
    assert int(launched.pid_file.read_text()) == launched.process.pid
    children = launched.children()
    assert len(children) == 2  # the gunicorn master and the nginx master

    assert launched.stop() == 0

    assert not launched.pid_file.exists()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{launched.base}/whoami", timeout=5)


def test_if_nginx_dies_the_launcher_stops_gunicorn_and_exits_non_zero(launched):
    nginx_master = next(pid for pid in launched.children() if b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes())

    os.kill(nginx_master, signal.SIGKILL)

    assert launched.process.wait(timeout=30) != 0


def test_on_a_port_already_taken_the_launcher_exits_non_zero_and_leaves_nothing_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, "LARDER_RUNTIME_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-m", "serving.launcher", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "tests.serving.echo_app:app"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 1
    assert "nginx exited" in done.stderr and "Address already in use" in done.stderr
    assert list(tmp_path.iterdir()) == []  # the runtime folder is gone with everything in it
