"""`RecordCache`: one region's Memcached pool, read by the API and written by the sync engine.

Several servers are spread by rendezvous (consistent) hashing. Unlike pymemcache's HashClient,
a server that fails is never skipped silently: reads and writes raise `CacheUnavailable`, so the
API can fall back to the durable state and a sync can fail (and be replayed) instead of
reporting success for writes that did not happen.
"""

from __future__ import annotations

import re
import socket
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.client.retrying import RetryingClient
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from orchestration.store.keys import SENTINEL_KEY

WRITE_BATCH = 2_000
# A connection a restarted memcached dropped fails once, then reconnects: retry exactly those
# (every operation here is idempotent). A server that is down is not retried: it raises at once.
RECONNECT_ON = (MemcacheUnexpectedCloseError, BrokenPipeError, ConnectionResetError)


class CacheUnavailable(RuntimeError):
    """A Memcached server of the region could not be reached or refused a write."""


class RecordCache:
    def __init__(self, servers: Iterable[str], *, timeout: float = 1.0, connect_timeout: float = 1.0):
        self.servers = tuple(servers)
        # Reads go through the plain clients and retry a dropped connection themselves, only when it
        # happens: the RetryingClient wrapper costs a lookup more than the rest of its Python work.
        # Writes wrap the same connections in a RetryingClient.
        self._readers = {
            server: Client(
                _host_port(server),
                timeout=timeout,
                connect_timeout=connect_timeout,
                no_delay=True,
                default_noreply=False,
            )
            for server in self.servers
        }
        self._clients = {
            server: RetryingClient(reader, attempts=2, retry_for=RECONNECT_ON)
            for server, reader in self._readers.items()
        }
        self._ring = RendezvousHash(list(self.servers)) if len(self.servers) > 1 else None
        self._only = self._clients[self.servers[0]] if len(self.servers) == 1 else None
        self._only_reader = self._readers[self.servers[0]] if len(self.servers) == 1 else None
        self._writers = {
            server: _StoreWriter(_host_port(server), timeout=timeout, connect_timeout=connect_timeout)
            for server in self.servers
        }

    def _client_for(self, key: str) -> RetryingClient:
        return self._only or self._clients[self._ring.get_node(key)]

    def _by_client(self, keys: Iterable[str]) -> dict[RetryingClient, list[str]]:
        groups: dict[RetryingClient, list[str]] = defaultdict(list)
        for key in keys:
            groups[self._client_for(key)].append(key)
        return groups

    def _reader_for(self, key: str) -> Client:
        return self._only_reader or self._readers[self._ring.get_node(key)]

    def get(self, key: str) -> bytes | None:
        """The value stored at `key`, or None. Raises CacheUnavailable if its server cannot answer."""
        reader = self._reader_for(key)
        try:
            try:
                return reader.get(key)
            except RECONNECT_ON:  # pymemcache has closed the dropped connection: the retry reconnects
                return reader.get(key)
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached get failed: {error}") from error

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The values of those keys that are stored (one multi-get per server)."""
        if self._only_reader is not None:
            groups: dict[Client, list[str]] = {self._only_reader: list(keys)}
        else:
            groups = defaultdict(list)
            for key in keys:
                groups[self._reader_for(key)].append(key)
        found: dict[str, bytes] = {}
        try:
            for reader, group in groups.items():
                try:
                    found.update(reader.get_many(group))
                except RECONNECT_ON:
                    found.update(reader.get_many(group))
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached get_many failed: {error}") from error
        return found

    def set_many(self, values: Mapping[str, bytes], *, expire: int = 0) -> None:
        """Store every value or raise CacheUnavailable naming how many were refused."""
        if self._ring is None:
            groups = {self.servers[0]: list(values)}
        else:
            groups = defaultdict(list)
            for key in values:
                groups[self._ring.get_node(key)].append(key)
        refused: list[tuple[str, str]] = []
        try:
            for server, group in groups.items():
                for start in range(0, len(group), WRITE_BATCH):
                    refused += self._writers[server].set_many(group[start : start + WRITE_BATCH], values, expire)
        except OSError as error:
            raise CacheUnavailable(f"memcached set_many failed: {error}") from error
        if refused:
            key, reply = refused[0]
            raise CacheUnavailable(f"memcached refused {len(refused)} item(s), e.g. {key!r}: {reply}")

    def add(self, key: str, value: bytes, *, expire: int = 0) -> bool:
        """Store only if absent (never overwrites what a sync just wrote)."""
        try:
            return bool(self._client_for(key).add(key, value, expire=expire, noreply=False))
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached add failed: {error}") from error

    def incr(self, key: str, delta: int, *, expire: int) -> int:
        """Add `delta` to the counter at `key`, creating it (expiring after `expire` s) if absent;
        the new total. Counters of the API's rate limits, shared by every worker of the region."""
        client = self._client_for(key)
        try:
            total = client.incr(key, delta, noreply=False)
            if total is None:
                if client.add(key, str(delta).encode("ascii"), expire=expire, noreply=False):
                    return delta
                total = client.incr(key, delta, noreply=False)  # another worker created it meanwhile
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached incr failed: {type(error).__name__}") from error
        return int(total) if total is not None else delta

    def delete_many(self, keys: Iterable[str]) -> None:
        try:
            for client, group in self._by_client(keys).items():
                for start in range(0, len(group), WRITE_BATCH):
                    client.delete_many(group[start : start + WRITE_BATCH], noreply=False)
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached delete failed: {error}") from error

    def write_sentinel(self, token: str) -> None:
        """Mark every server as populated; a server that loses the mark has lost its data."""
        try:
            for client in self._clients.values():
                client.set(SENTINEL_KEY, token.encode(), noreply=False)
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached set failed: {error}") from error

    def servers_missing_sentinel(self) -> list[str]:
        """Servers whose sentinel is gone (restarted, flushed or evicted). Raises if unreachable."""
        missing = []
        try:
            for server, client in self._clients.items():
                if client.get(SENTINEL_KEY) is None:
                    missing.append(server)
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached get failed: {error}") from error
        return missing

    def ping(self) -> None:
        """Raise CacheUnavailable unless every server answers."""
        try:
            for client in self._clients.values():
                client.version()
        except (OSError, MemcacheError) as error:
            raise CacheUnavailable(f"memcached unreachable: {error}") from error

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for writer in self._writers.values():
            writer.close()


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


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host, int(port)
