"""A TCP forwarder put in front of a store (Postgres in the tests and `make chaos`), for the faults
tests cannot cause otherwise. `bench.processes.TcpProxy` runs it:

    python -m bench.tcp_proxy LISTEN_PORT TARGET_HOST TARGET_PORT [--reply-delay SECONDS]

Frozen (SIGSTOP), it hangs the store behind it as a partitioned or locked-up server does
(connections are still accepted by the kernel, nothing is answered); killed, connections are
refused. `--reply-delay` holds each chunk the target sends for that long before passing it on: a
slow link, which widens the window between a read's snapshot and its answer.
"""

from __future__ import annotations

import argparse
import queue
import signal
import socket
import sys
import threading
import time


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target_host")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--reply-delay", type=float, default=0.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.listen_port, (args.target_host, args.target_port), args.reply_delay)


if __name__ == "__main__":
    main()
