"""A TCP forwarder in its own process, for the faults of a store that tests cannot cause otherwise.

    python -m tests.serving.tcp_proxy LISTEN_PORT TARGET_HOST:TARGET_PORT [--reply-delay SECONDS]

`TcpProxy` runs it: `freeze()` (SIGSTOP) makes the store behind it hang as a partitioned or
locked-up server does (connections are still accepted by the kernel, nothing is answered),
`thaw()` (SIGCONT) ends that, and `stop()` makes it refuse connections. `--reply-delay` holds
each chunk the target sends for that long before passing it on: a slow link, which widens the
window between a read's snapshot and its answer.
"""

from __future__ import annotations

import argparse
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from tests.support import free_port, wait_for_port


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    """Copy bytes from source to target until either side closes; each chunk `delay` late."""
    pending: queue.Queue = queue.Queue()

    def send_in_order() -> None:
        while (item := pending.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                target.sendall(data)
            except OSError:
                break
        _close(source, target)

    sender = threading.Thread(target=send_in_order, daemon=True)
    sender.start()
    try:
        while data := source.recv(65536):
            pending.put((time.monotonic() + delay, data))
    except OSError:
        pass
    pending.put(None)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def serve(listen_port: int, target: tuple[str, int], reply_delay: float) -> None:
    listener = socket.create_server(("127.0.0.1", listen_port), backlog=128)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target)
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, upstream, 0.0), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, reply_delay), daemon=True).start()


class TcpProxy:
    """The forwarder as a child process on a free port, in front of `target` (host:port)."""

    def __init__(self, target: str, *, reply_delay: float = 0.0):
        self.target = target
        self.reply_delay = reply_delay
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> TcpProxy:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.serving.tcp_proxy", str(self.port), self.target,
             "--reply-delay", str(self.reply_delay)],
        )
        wait_for_port(self.port)
        return self

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill it: its connections are reset and new ones refused."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target")
    parser.add_argument("--reply-delay", type=float, default=0.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.listen_port, (host, int(port)), args.reply_delay)


if __name__ == "__main__":
    main()
