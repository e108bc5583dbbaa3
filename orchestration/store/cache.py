"""`RecordCache`: one region's Memcached pool, read by the API and written by the sync engine.

Several servers are spread by rendezvous (consistent) hashing. Unlike pymemcache's HashClient,
a server that fails is never skipped silently: reads and writes raise `CacheUnavailable`, so the
API can fall back to the durable state and a sync can fail (and be replayed) instead of
reporting success for writes that did not happen.

Each server has a circuit breaker: after a timeout, or `BREAKER_FAILURES` consecutive connection
errors, calls to it fail at once (`CircuitOpen`) for `BREAKER_COOL_DOWN_SECONDS`; then the next
call first probes the server (`version`, with a `PROBE_TIMEOUT_SECONDS` timeout): an answer closes
the circuit and the call proceeds, silence reopens it. A frozen server (SIGSTOP, a partition)
otherwise costs every lookup a full timeout: 1 s × 3 workers was 3 lookups a second.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.client.retrying import RetryingClient
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from orchestration.machine import host_port
from orchestration.store.keys import SENTINEL_KEY

WRITE_BATCH = 2_000
# A connection a restarted memcached dropped fails once, then reconnects: retry exactly those
# (every operation here is idempotent). A server that is down is not retried: it raises at once.
RECONNECT_ON = (MemcacheUnexpectedCloseError, BrokenPipeError, ConnectionResetError)
# Reads answer in well under a millisecond; a server that takes this long is treated as down (the
# API answers from the state). Writes carry thousands of items per round trip: a longer timeout.
READ_TIMEOUT_SECONDS = 0.3
WRITE_TIMEOUT_SECONDS = 1.0
BREAKER_FAILURES = 3
BREAKER_COOL_DOWN_SECONDS = 2.0
# A probe is a `version` on a connection of its own: a server that is back answers it at once,
# and one still frozen costs this, not a read timeout, every cool-down.
PROBE_TIMEOUT_SECONDS = 0.05


class CacheUnavailable(RuntimeError):
    """A Memcached server of the region could not be reached or refused a write."""


class CircuitOpen(CacheUnavailable):
    """A server's circuit is open: it failed repeatedly and is not tried until its cool-down ends."""


class CircuitBreaker:
    """One server's health as this process sees it: closed, open (fail fast), half-open (one probe).

    Only transport failures count; a server that answers, even with an error, is up. A timeout
    opens the circuit at once: it already cost a lookup `READ_TIMEOUT_SECONDS`, and a server
    that is frozen or partitioned away would cost that again on every call. Refused or dropped
    connections are cheap and happen once when a server restarts, so it takes `failures` of them
    in a row.
    """

    def __init__(self, server: str, *, failures: int = BREAKER_FAILURES, cool_down: float = BREAKER_COOL_DOWN_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.server = server
        self.threshold = failures
        self.cool_down = cool_down
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0  # 0: closed
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return bool(self._open_until)

    @property
    def failures(self) -> int:
        return self._failures

    def before_call(self) -> bool:
        """False: go ahead (closed). True: the cool-down is over, probe before going ahead.
        Raises CircuitOpen while open."""
        if not self._open_until:
            return False
        with self._lock:
            now = self._clock()
            if now < self._open_until:
                raise CircuitOpen(f"memcached {self.server} is failing ({self._failures} failure(s) in a row); "
                                  f"not tried again for {self._open_until - now:.1f} s")
            # Half-open: this call probes; the others fail fast until it reports (or times out).
            self._open_until = now + self.cool_down
            return True

    def succeeded(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0
                self._open_until = 0.0

    def failed(self, error: BaseException | None = None) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold or isinstance(error, TimeoutError):
                self._open_until = self._clock() + self.cool_down


class _Server:
    """One memcached server: its breaker and its connections (each opened on first use)."""

    def __init__(self, server: str, *, read_timeout: float, timeout: float, connect_timeout: float,
                 breaker: CircuitBreaker):
        address = host_port(server)
        self.name = server
        self.breaker = breaker
        # Reads go through a plain client and retry a dropped connection themselves, only when it
        # happens: the RetryingClient wrapper costs a lookup more than the rest of its Python work.
        self.reader = Client(address, timeout=read_timeout, connect_timeout=connect_timeout,
                             no_delay=True, default_noreply=False)
        self.client = RetryingClient(
            Client(address, timeout=timeout, connect_timeout=connect_timeout, no_delay=True, default_noreply=False),
            attempts=2, retry_for=RECONNECT_ON)
        self.writer = _StoreWriter(address, timeout=timeout, connect_timeout=connect_timeout)
        self.prober = Client(address, timeout=PROBE_TIMEOUT_SECONDS, connect_timeout=PROBE_TIMEOUT_SECONDS,
                             no_delay=True, default_noreply=False)

    def probe(self) -> None:
        """The half-open circuit's test: closes it if the server answers, else reopens it (CircuitOpen)."""
        try:
            self.prober.version()
        except (OSError, MemcacheError) as error:
            self.breaker.failed(error)
            raise CircuitOpen(f"memcached {self.name} is still not answering: {error!r}") from error
        finally:
            self.prober.close()  # probes are seconds apart: no idle connection kept for them
        self.breaker.succeeded()

    def call(self, operation: Callable, what: str):
        """Run `operation()` against this server through its breaker; CacheUnavailable if it fails."""
        if self.breaker.before_call():
            self.probe()
        try:
            result = operation()
        except (OSError, MemcacheUnexpectedCloseError) as error:
            self.breaker.failed(error)
            raise CacheUnavailable(f"memcached {what} failed on {self.name}: {error!r}") from error
        except MemcacheError as error:
            raise CacheUnavailable(f"memcached {what} failed on {self.name}: {error}") from error
        self.breaker.succeeded()
        return result

    def close(self) -> None:
        self.reader.close()
        self.client.close()
        self.writer.close()
        self.prober.close()


class RecordCache:
    def __init__(self, servers: Iterable[str], *, timeout: float = WRITE_TIMEOUT_SECONDS,
                 read_timeout: float = READ_TIMEOUT_SECONDS, connect_timeout: float = READ_TIMEOUT_SECONDS,
                 breaker_failures: int = BREAKER_FAILURES, breaker_cool_down: float = BREAKER_COOL_DOWN_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.servers = tuple(servers)
        self._servers = {
            server: _Server(server, read_timeout=min(read_timeout, timeout), timeout=timeout,
                            connect_timeout=connect_timeout,
                            breaker=CircuitBreaker(server, failures=breaker_failures, cool_down=breaker_cool_down,
                                                   clock=clock))
            for server in self.servers
        }
        ring = RendezvousHash(list(self.servers)) if len(self.servers) > 1 else None
        self._node_of: Callable[[str], str] = ring.get_node if ring is not None else lambda _key: self.servers[0]
        self._only = self._servers[self.servers[0]] if len(self.servers) == 1 else None

    def _server_for(self, key: str) -> _Server:
        return self._only or self._servers[self._node_of(key)]

    def _by_server(self, keys: Iterable[str]) -> dict[_Server, list[str]]:
        if self._only is not None:
            return {self._only: list(keys)}
        groups: dict[_Server, list[str]] = defaultdict(list)
        for key in keys:
            groups[self._servers[self._node_of(key)]].append(key)
        return groups

    def breaker(self, server: str) -> CircuitBreaker:
        return self._servers[server].breaker

    def get(self, key: str) -> bytes | None:
        """The value stored at `key`, or None. Raises CacheUnavailable if its server cannot answer."""
        # The lookup's hot path: `_Server.call` inlined (a lambda and two calls cost ~1 µs).
        server = self._server_for(key)
        if server.breaker.before_call():
            server.probe()
        try:
            try:
                value = server.reader.get(key)
            except RECONNECT_ON:  # pymemcache has closed the dropped connection: the retry reconnects
                value = server.reader.get(key)
        except (OSError, MemcacheUnexpectedCloseError) as error:
            server.breaker.failed(error)
            raise CacheUnavailable(f"memcached get failed on {server.name}: {error!r}") from error
        except MemcacheError as error:
            raise CacheUnavailable(f"memcached get failed on {server.name}: {error}") from error
        server.breaker.succeeded()
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The values of those keys that are stored (one multi-get per server)."""
        found: dict[str, bytes] = {}
        for server, group in self._by_server(keys).items():
            found.update(server.call(lambda server=server, group=group: _reconnecting(server.reader.get_many, group), "get_many"))
        return found

    def set_many(self, values: Mapping[str, bytes], *, expire: int = 0) -> None:
        """Store every value or raise CacheUnavailable naming how many were refused."""
        refused: list[tuple[str, str]] = []
        for server, group in self._by_server(values).items():
            for start in range(0, len(group), WRITE_BATCH):
                batch = group[start : start + WRITE_BATCH]
                refused += server.call(lambda server=server, batch=batch: server.writer.set_many(batch, values, expire),
                                       "set_many")
        if refused:
            key, reply = refused[0]
            raise CacheUnavailable(f"memcached refused {len(refused)} item(s), e.g. {key!r}: {reply}")

    def add(self, key: str, value: bytes, *, expire: int = 0) -> bool:
        """Store only if absent (never overwrites what a sync just wrote)."""
        server = self._server_for(key)
        stored = server.call(lambda: _reconnecting(server.reader.add, key, value, expire=expire, noreply=False), "add")
        return bool(stored)

    def incr(self, key: str, delta: int, *, expire: int) -> int:
        """Add `delta` to the counter at `key`, creating it (expiring after `expire` s) if absent;
        the new total. Counters of the API's rate limits, shared by every worker of the region."""
        server = self._server_for(key)

        def increment() -> int:
            client = server.client
            total = client.incr(key, delta, noreply=False)
            if total is None:
                if client.add(key, str(delta).encode("ascii"), expire=expire, noreply=False):
                    return delta
                total = client.incr(key, delta, noreply=False)  # another worker created it meanwhile
            return int(total) if total is not None else delta

        return server.call(increment, "incr")

    def delete_many(self, keys: Iterable[str]) -> None:
        for server, group in self._by_server(keys).items():
            for start in range(0, len(group), WRITE_BATCH):
                batch = group[start : start + WRITE_BATCH]
                server.call(lambda server=server, batch=batch: server.client.delete_many(batch, noreply=False), "delete")

    def write_sentinel(self, token: str) -> None:
        """Mark every server as populated; a server that loses the mark has lost its data."""
        for server in self._servers.values():
            server.call(lambda server=server: server.client.set(SENTINEL_KEY, token.encode(), noreply=False), "set")

    def servers_missing_sentinel(self) -> list[str]:
        """Servers whose sentinel is gone (restarted, flushed or evicted). Raises if unreachable."""
        return [
            server.name for server in self._servers.values()
            if server.call(lambda server=server: _reconnecting(server.reader.get, SENTINEL_KEY), "get") is None
        ]

    def ping(self) -> None:
        """Raise CacheUnavailable unless every server answers."""
        for server in self._servers.values():
            server.call(lambda server=server: _reconnecting(server.reader.version), "version")

    def close(self) -> None:
        for server in self._servers.values():
            server.close()


def _reconnecting(operation: Callable, *args, **kwargs):
    """Once more if a restarted server dropped the connection (pymemcache has closed it: the
    second call reconnects)."""
    try:
        return operation(*args, **kwargs)
    except RECONNECT_ON:
        return operation(*args, **kwargs)


# What memcached accepts as a key: 1 to 250 printable ASCII characters, no space.
_VALID_KEY = re.compile(rb"[\x21-\x7e]{1,250}")
_STORED = b"STORED\r\n"


class _ConnectionDropped(ConnectionResetError):
    """The server closed the connection before answering every command."""


class _StoreWriter:
    """`set` for many keys of one server: one buffer of commands per batch, every reply read and
    checked (so a refused item is never reported stored), on a connection of its own.

    pymemcache's set_many spends a few microseconds of Python per key; a sync writes millions.
    """

    def __init__(self, address: tuple[str, int], *, timeout: float, connect_timeout: float):
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None

    def set_many(self, keys: Sequence[str], values: Mapping[str, bytes], expire: int) -> list[tuple[str, str]]:
        """Store `values[key]` for each key; returns (key, the server's reply) for each refused one."""
        encoded = [key.encode("ascii") for key in keys]
        invalid = [key for key in encoded if not _VALID_KEY.fullmatch(key)]
        if invalid:
            raise ValueError(f"not a valid memcached key: {invalid[0]!r}")
        commands = b"".join([
            b"set %b 0 %d %d\r\n%b\r\n" % (key, expire, len(value), value)
            for key, value in zip(encoded, map(values.__getitem__, keys))
        ])
        try:
            replies = self._exchange(commands, len(keys))
        except RECONNECT_ON:  # a restarted server dropped the connection: once more on a new one
            replies = self._exchange(commands, len(keys))
        if replies == _STORED * len(keys):
            return []
        self.close()  # after an error reply the stream is not trusted: the next batch reconnects
        return [
            (key, reply.decode("ascii", "replace"))
            for key, reply in zip(keys, replies.split(b"\r\n")) if reply != b"STORED"
        ]

    def _exchange(self, commands: bytes, count: int) -> bytes:
        """Send the commands, then read one reply line per command."""
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self.address, timeout=self.connect_timeout)
                self._sock.settimeout(self.timeout)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(commands)
            replies = bytearray()
            lines = 0
            while lines < count:
                data = self._sock.recv(65536)
                if not data:
                    raise _ConnectionDropped(f"memcached {self.address[0]}:{self.address[1]} closed the connection")
                lines += data.count(b"\n")
                replies += data
            return bytes(replies)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
