"""The buffering proxy in front of a region's gunicorn: nginx, configured from a template.

gunicorn listens on a unix socket in a private runtime folder, so only this proxy reaches it;
nginx listens on the region's address, reads each request whole (header and body timeouts, a
body-size limit), answers its own errors in the API's JSON shape, and passes the client's address
as X-Forwarded-For, which `ClientAddress` makes the worker's REMOTE_ADDR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from serving.contract import ERROR_STATUS, MAX_BODY, MAX_LINE, RETRY_AFTER_CODES, ErrorCode

TEMPLATE = Path(__file__).with_name("nginx.conf.template")


class ProxyError(RuntimeError):
    """nginx is missing or refused its configuration (the message says which and how to fix it)."""


@dataclass(frozen=True)
class ProxyLimits:
    """What a client may take: time to send its request, its size; how long a worker may take."""

    header_timeout: int = 10  # seconds for the whole request header
    body_timeout: int = 10  # seconds of silence while sending a body
    send_timeout: int = 10  # seconds of silence while the client reads the answer
    keepalive_timeout: int = 30  # an idle keep-alive connection is closed after this
    max_body: str = MAX_BODY
    max_line: str = MAX_LINE
    connect_timeout: int = 5  # to gunicorn's socket (its backlog queues while every worker is busy)
    read_timeout: int = 35  # longer than gunicorn's worker timeout (30 s), which kills a hung worker first
    retry_within: int = 5  # a GET whose worker died within this many seconds is retried on another


@dataclass(frozen=True)
class ProxyErrorPage:
    """An answer nginx gives itself, in the API's error shape."""

    code: ErrorCode
    message: str  # `{name}` is a ProxyLimits field
    answers: Literal["any", "body", "internal"]  # any request; a request with a body; only nginx's own pages
    nginx_status: int | None = None  # nginx's own status, when it is not the answer's


PROXY_ERRORS = (
    ProxyErrorPage(ErrorCode.BAD_REQUEST, "the request is not valid HTTP", "any"),
    ProxyErrorPage(ErrorCode.NOT_FOUND, "no endpoint here; see /openapi.json", "internal"),
    ProxyErrorPage(ErrorCode.REQUEST_TIMEOUT, "the request did not arrive in time", "body"),
    ProxyErrorPage(ErrorCode.LENGTH_REQUIRED, "send a Content-Length or a chunked body", "body"),
    ProxyErrorPage(ErrorCode.PAYLOAD_TOO_LARGE, "request bodies are limited to {max_body}", "body"),
    ProxyErrorPage(ErrorCode.URI_TOO_LONG, "the request line is limited to {max_line}; send long batches as POST",
                   "any"),
    ProxyErrorPage(ErrorCode.HEADERS_TOO_LARGE, "a header line is limited to {max_line}", "any", nginx_status=494),
    ProxyErrorPage(ErrorCode.INTERNAL_ERROR, "the server failed to answer this request", "any"),
    ProxyErrorPage(ErrorCode.BAD_GATEWAY, "the API workers did not answer; retry", "any"),
    ProxyErrorPage(ErrorCode.GATEWAY_TIMEOUT, "the API workers did not answer in {read_timeout} s; retry", "any"),
)


def render_config(*, listen: str, upstream: Path, runtime: Path, limits: ProxyLimits = ProxyLimits(),
                  worker_processes: int | str = 1, log_level: str = "warn") -> str:
    """nginx.conf for one region: listen on `listen`, proxy to gunicorn's unix socket `upstream`."""
    values = {
        **{name: str(value) for name, value in asdict(limits).items()},
        "listen": _nginx_listen(listen),
        "upstream": str(upstream),
        "runtime": str(runtime),
        "worker_processes": str(worker_processes),
        "log_level": log_level,
        # As root, nginx would run its workers as `nobody`, who cannot enter a private runtime
        # folder; they run as root then, as gunicorn's workers do (run `larder serve` unprivileged).
        "user": "user root root;" if os.geteuid() == 0 else "",
        "error_pages": _error_pages(limits),
    }
    text = TEMPLATE.read_text()
    unknown = set(re.findall(r"\{\{(\w+)\}\}", text)) - set(values)
    if unknown:
        raise ValueError(f"{TEMPLATE.name}: no value for {', '.join(sorted(unknown))}")
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match[1]], text)


def _error_pages(limits: ProxyLimits) -> str:
    """nginx's `error_page` directives and the internal locations answering them."""
    directives, locations = [], []
    for page in PROXY_ERRORS:
        status = ERROR_STATUS[page.code]
        body = json.dumps({"error": {"code": page.code.value, "message": page.message.format(**asdict(limits))}})
        if "'" in body or "\\" in body:
            raise ValueError(f"{page.code}: an nginx error page cannot quote {body}")
        mapped = f"{page.nginx_status} ={status}" if page.nginx_status else str(status)
        directives.append(f"        error_page {mapped} /_larder/error/{status};")
        retry_after = ["            add_header Retry-After 1 always;"] if page.code in RETRY_AFTER_CODES else []
        locations += [f"        location = /_larder/error/{status} {{", "            internal;", *retry_after,
                      f"            return {status} '{body}';", "        }"]
    return "\n".join(directives + locations)


def _nginx_listen(bind: str) -> str:
    """gunicorn's bind syntax (host:port, [::1]:port, unix:/path) as nginx's `listen`."""
    if not bind.startswith("unix:"):
        split_bind(bind)
    return bind


def split_bind(bind: str) -> tuple[str, int]:
    """(host, port) of a host:port bind address ([::1]:port too; the brackets are kept)."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cannot listen on {bind!r}: expected host:port or unix:/path")
    return host, int(port)


def nginx_binary() -> str:
    """The nginx executable, or a clear error saying how to install it."""
    binary = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None)
    if binary is None:
        raise ProxyError("nginx is not installed; `make run` and `make test` install it "
                         "(or: sudo apt-get install -y nginx)")
    return binary


class NginxProcess:
    """nginx in the foreground (`daemon off`), a child of the caller, configured in `runtime`."""

    def __init__(self, runtime: Path, config: str):
        self.runtime = runtime
        self.config_path = runtime / "nginx.conf"
        self.config_path.write_text(config)
        self.process: subprocess.Popen | None = None

    def start(self, *, preexec_fn: Callable[[], Any] | None = None) -> subprocess.Popen:
        binary = nginx_binary()
        # -e: the error log before the configuration is read (default: a file under /var/log).
        command = [binary, "-p", str(self.runtime), "-c", str(self.config_path), "-e", "stderr"]
        check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise ProxyError(f"nginx rejected {self.config_path}: {check.stderr.strip()}")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
        return self.process

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, *, grace: float = 3.0) -> None:
        """Finish the requests in flight (QUIT), then stop at once (TERM), then KILL."""
        if self.process is None:
            return
        for signum, wait in ((signal.SIGQUIT, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            self.signal(signum)
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


class ClientAddress:
    """WSGI middleware: behind the local proxy, REMOTE_ADDR is the client's address.

    Requests that came through gunicorn's unix socket came from the proxy (only it can reach the
    socket), which replaced any X-Forwarded-For the client sent with the address it saw. Requests
    on a TCP socket keep their peer's address, whatever header they carry.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and _through_unix_socket(environ):
            environ["REMOTE_ADDR"] = forwarded
        return self.app(environ, start_response)


def _through_unix_socket(environ) -> bool:
    sock = environ.get("gunicorn.socket")
    return sock is not None and sock.family == socket.AF_UNIX
