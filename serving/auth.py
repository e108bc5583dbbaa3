"""API keys and what limits their use.

- `KeyRing`: the active keys of the state store, reloaded every `api.key_refresh_seconds` (at most
  5) by a thread of each worker, never on a request: a hung state store delays no request, and the
  last keys loaded stay in use until it answers again. A revocation reaches every worker within
  the interval.
- `InvalidKeys`: failed key checks per client address and minute, counted in the region's
  memcached. Past `api.invalid_keys_per_minute` an address gets 429 too_many_invalid_keys for
  the rest of the minute, and its secrets are not checked meanwhile, so keys cannot be guessed at
  speed. A secret the worker has already seen match (every request of a working client) skips
  the check and the count.
- `RateLimits`: a key's requests per second for the whole region, counted in the region's memcached
  (a counter per key and second); each worker reserves about 1 % of the second's allowance at a time,
  so a busy key costs a memcached round trip per reservation, not per request.

Both counters fall back to counting in the worker while the region's memcached is unreachable.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable

import falcon

from orchestration.store.cache import CacheUnavailable, RecordCache
from orchestration.store.keys import counter_key
from orchestration.store.state import KeyInfo, StateStore, secret_matches, split_secret
from serving import errors
from serving.errors import ThrottledLog, describe_error
from serving.state_reads import STORE_ERRORS

log = logging.getLogger("larder.api")
THROTTLED = ThrottledLog(log)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/metrics"})
# How long a request waits for a worker's first key load before it answers 503 keys_unavailable.
FIRST_LOAD_WAIT_SECONDS = 1.0
INVALID_KEYS_WINDOW_SECONDS = 60
MAX_LOCAL_ADDRESSES = 100_000
# A worker reserves this share of a key's allowance per second at a time (at least one request).
RESERVATION_SHARE = 0.01


class KeyRing:
    """The active keys by prefix, and the secrets this worker has seen match one.

    `reload()` replaces both at once; `start()` runs it every `refresh_seconds` on a daemon thread
    that ends with the KeyRing (it holds only a weak reference), so a rebuilt app leaves no
    refresher behind. If the state store cannot be read, the last keys stay in use (nobody can
    revoke a key while the state is down either); before the first load, requests wait for it up
    to FIRST_LOAD_WAIT_SECONDS, and get 503 keys_unavailable at once after a first load failed.

    A secret that matched is remembered, and carried over to the next load while its key is still
    active, so a key in use is hashed once per worker, and a revoked key's secret is forgotten at
    the first load without it.
    """

    def __init__(self, state: StateStore, *, refresh_seconds: float):
        self._state = state
        self._refresh_seconds = refresh_seconds
        # (active keys by prefix, secrets that matched → their key), swapped as one on each reload
        # so a secret checked against keys that were just replaced is never remembered for long.
        self._loaded: tuple[dict[str, KeyInfo], dict[str, KeyInfo]] | None = None
        self._first_attempt = threading.Event()  # set once a load has succeeded or failed
        self._stopped = threading.Event()

    def start(self) -> None:
        """Load the keys now (a worker starts serving with them), then every `refresh_seconds` on
        a thread of this process."""
        self.reload_or_warn()
        threading.Thread(
            target=_refresh_forever, args=(weakref.ref(self), self._refresh_seconds, self._stopped),
            name="larder-keys", daemon=True,
        ).start()

    def stop(self) -> None:
        self._stopped.set()

    def reload(self) -> None:
        """Load the active keys from the state store (raises if it cannot be read; `start()` and
        its thread call this)."""
        active = {key.prefix: key for key in self._state.list_keys(include_revoked=False)}
        verified: dict[str, KeyInfo] = {}
        if self._loaded is not None:
            for secret, key in list(self._loaded[1].items()):
                current = active.get(key.prefix)
                if current is not None and current.secret_hash == key.secret_hash:
                    verified[secret] = current
        self._loaded = (active, verified)

    def reload_or_warn(self) -> None:
        """Reload, logging (throttled) a failure instead of raising: the last keys stay in use."""
        try:
            self.reload()
        except STORE_ERRORS as error:
            THROTTLED.warning("keys", "cannot reload API keys from the state store (%s); the keys loaded last "
                              "stay in use", describe_error(error))
        else:
            THROTTLED.recovered("keys", "API keys reloaded from the state store again")
        finally:
            self._first_attempt.set()

    def known(self, secret: str) -> KeyInfo | None:
        """The key of a secret that already matched in this worker, else None (no hashing)."""
        loaded = self._loaded
        return loaded[1].get(secret) if loaded is not None else None

    def check(self, secret: str) -> KeyInfo | None:
        """The key a presented secret belongs to, or None: hashed and compared in constant time."""
        prefix = split_secret(secret)
        if prefix is None:  # malformed: no key could match, whatever the state holds
            return None
        loaded = self._loaded
        if loaded is None:
            loaded = self._wait_for_first_load()
        keys, verified = loaded
        key = keys.get(prefix)
        if key is None or not secret_matches(secret, key.secret_hash):
            return None
        verified[secret] = key
        return key

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The key a presented secret belongs to, or None."""
        return self.known(secret) or self.check(secret)

    def _wait_for_first_load(self) -> tuple[dict[str, KeyInfo], dict[str, KeyInfo]]:
        self._first_attempt.wait(FIRST_LOAD_WAIT_SECONDS)
        loaded = self._loaded
        if loaded is None:
            raise errors.keys_unavailable()
        return loaded


def _refresh_forever(ring_ref: weakref.ref, interval: float, stopped: threading.Event) -> None:
    while not stopped.wait(interval):
        ring = ring_ref()
        if ring is None:  # the app that owned it was replaced
            return
        try:
            ring.reload_or_warn()
        except Exception:  # a bug, not an outage: say so loudly, and keep refreshing (revocations depend on it)
            log.exception("reloading the API keys failed unexpectedly; the keys loaded last stay in use")
        del ring


class TokenBucket:
    """`rate` requests per second with bursts of up to max(1, rate), in this process."""

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 when a request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _Reservation:
    """What a worker may still admit for one key in the current window."""

    __slots__ = ("window", "left", "exhausted")

    def __init__(self, window: int):
        self.window = window
        self.left = 0
        self.exhausted = False  # the region's allowance for this window is used up


class RateLimits:
    """Per-key limits for the whole region: at most ⌊rate⌋ requests in each clock second (a
    rate below 1: one request per ⌈1/rate⌉ seconds), counted in the region's memcached."""

    def __init__(self, cache: RecordCache):
        self._cache = cache
        self._reservations: dict[str, _Reservation] = {}
        self._local: dict[str, TokenBucket] = {}

    def take(self, prefix: str, rate: float) -> None:
        """Admit one request of the key, or raise 429 rate_limited."""
        seconds, allowance = _window(rate)
        now = time.time()
        window = int(now // seconds) * seconds
        reservation = self._reservations.get(prefix)
        if reservation is None or reservation.window != window:
            reservation = self._reservations[prefix] = _Reservation(window)
        if reservation.left > 0:
            reservation.left -= 1
            return
        if not reservation.exhausted:
            granted = self._reserve(prefix, rate, window, seconds, allowance)
            if granted > 0:
                reservation.left = granted - 1
                return
            reservation.exhausted = True
        raise errors.rate_limited(max(1, math.ceil(window + seconds - now)))

    def _reserve(self, prefix: str, rate: float, window: int, seconds: int, allowance: int) -> int:
        """Requests granted to this worker from the region's allowance for the window."""
        size = max(1, int(allowance * RESERVATION_SHARE))
        try:
            total = self._cache.incr(counter_key("rate", prefix, window), size, expire=seconds + 2)
        except CacheUnavailable as error:
            THROTTLED.warning("rate_cache", "rate limits counted per worker, the region's cache is unreachable: %s",
                              describe_error(error))
            return self._take_locally(prefix, rate)
        return max(0, min(size, allowance - (total - size)))

    def _take_locally(self, prefix: str, rate: float) -> int:
        bucket = self._local.get(prefix)
        if bucket is None or bucket.rate != rate:
            bucket = self._local[prefix] = TokenBucket(rate)
        return 1 if bucket.take() == 0 else 0


def _window(rate: float) -> tuple[int, int]:
    """(window in seconds, requests allowed in it) of a per-second rate."""
    if rate >= 1:
        return 1, int(rate)
    seconds = math.ceil(1 / rate)
    return seconds, max(1, int(rate * seconds))


class InvalidKeys:
    """Failed key checks per client address and minute, for the whole region."""

    def __init__(self, cache: RecordCache, per_minute: int):
        self._cache = cache
        self._per_minute = per_minute
        self._window = -1
        self._blocked: set[str] = set()  # addresses over the limit in the current window
        self._local: dict[str, int] = {}  # counts while the region's memcached is unreachable

    def check(self, address: str) -> None:
        """429 too_many_invalid_keys while `address` is over the limit (before its secret is checked)."""
        window, retry_after = self._current_window()
        if address in self._blocked or self._count(address, window, 0) >= self._per_minute:
            self._blocked.add(address)
            raise errors.too_many_invalid_keys(retry_after)

    def failed(self, address: str) -> None:
        """Count a failed check from `address`."""
        window, _ = self._current_window()
        self._count(address, window, 1)

    def _current_window(self) -> tuple[int, int]:
        now = time.time()
        window = int(now // INVALID_KEYS_WINDOW_SECONDS) * INVALID_KEYS_WINDOW_SECONDS
        if window != self._window:
            self._window, self._blocked, self._local = window, set(), {}
        return window, max(1, math.ceil(window + INVALID_KEYS_WINDOW_SECONDS - now))

    def _count(self, address: str, window: int, delta: int) -> int:
        """The address's failures in the window, after adding `delta`."""
        key = counter_key("invalid_keys", address, window)
        try:
            if delta:
                return self._cache.incr(key, delta, expire=INVALID_KEYS_WINDOW_SECONDS + 5)
            return int(self._cache.get(key) or 0)
        except CacheUnavailable as error:
            THROTTLED.warning("invalid_keys_cache", "invalid keys counted per worker, the region's cache is "
                              "unreachable: %s", describe_error(error))
            if len(self._local) > MAX_LOCAL_ADDRESSES:  # addresses made up to fill this worker's memory
                self._local.clear()
            self._local[address] = count = self._local.get(address, 0) + delta
            return count


class TrustedProxies:
    """Which peers may say who the client is (X-Forwarded-For): the proxies in front of the API."""

    def __init__(self, entries: Iterable[str]):
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)

    def client_address(self, req: falcon.Request) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
        address in X-Forwarded-For that is not one. A peer on a unix socket counts as a proxy."""
        peer = _address(req.remote_addr)
        if peer is not None and not self._trusted(peer):
            return str(peer)
        forwarded = req.get_header("X-Forwarded-For") or ""
        for hop in reversed(forwarded.split(",")):
            address = _address(hop.strip())
            if address is None:
                break  # a malformed hop: whatever is left of it cannot be trusted
            if not self._trusted(address):
                return str(address)
        return str(peer) if peer is not None else "local"

    def _trusted(self, address) -> bool:
        return any(address in network for network in self._networks)


def _address(text: str | None):
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


class AuthMiddleware:
    """Every /v1 request needs `Authorization: Bearer <key>`; the key lands in req.context.key.

    A secret this worker has seen match goes straight on; any other is checked unless its client
    address is over its failures (InvalidKeys), and a failure is counted. Then the key's region scope is checked, and its
    rate limit (the key's own, else the project's `api.rate_limit_per_second`; none by default).
    """

    def __init__(self, keyring: KeyRing, region: str, *, invalid_keys: InvalidKeys, proxies: TrustedProxies,
                 limits: RateLimits, default_rate_limit: float | None = None):
        self._keyring = keyring
        self._region = region
        self._invalid_keys = invalid_keys
        self._proxies = proxies
        self._limits = limits
        self._default_rate_limit = default_rate_limit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC_PATHS or req.method == "OPTIONS":
            return
        header = req.get_header("Authorization")
        if not header:
            raise errors.missing_key()
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise errors.bad_key()
        key = self._keyring.known(secret)
        if key is None:
            key = self._check_new_secret(req, secret)
        if key.regions is not None and self._region not in key.regions:
            raise errors.out_of_scope(f"region {self._region!r}")
        rate = key.rate_limit or self._default_rate_limit
        if rate:
            self._limits.take(key.prefix, rate)
        req.context.key = key

    def _check_new_secret(self, req: falcon.Request, secret: str) -> KeyInfo:
        address = self._proxies.client_address(req)
        self._invalid_keys.check(address)
        key = self._keyring.check(secret)
        if key is None:
            self._invalid_keys.failed(address)
            raise errors.bad_key()
        return key


def require_collection_scope(req: falcon.Request, collection: str) -> None:
    """Raise 403 out_of_scope unless the request's key may read `collection`."""
    if not may_read(req.context.key, collection):
        raise errors.out_of_scope(f"collection {collection!r}")


def may_read(key: KeyInfo, collection: str) -> bool:
    return key.collections is None or collection in key.collections
