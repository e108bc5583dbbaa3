"""RecordCache: one region's pool; failures raise CacheUnavailable, never silent misses."""

from __future__ import annotations

import pytest

from orchestration.store.cache import CacheUnavailable, CircuitBreaker, CircuitOpen, RecordCache
from tests.support import MemcachedProcess


def test_pool_of_two_spreads_keys_and_reads_them_back(memcached_pair):
    cache = RecordCache([m.server for m in memcached_pair])
    values = {f"L1:c:i:={n}": f"v{n}".encode() for n in range(300)}
    cache.set_many(values)
    assert cache.get_many(list(values)) == values
    assert cache.get("L1:c:i:=7") == b"v7"
    alone = [RecordCache([m.server]) for m in memcached_pair]
    shares = [len(c.get_many(list(values))) for c in alone]
    assert sum(shares) == 300 and min(shares) > 50
    cache.delete_many(list(values)[:100])
    assert len(cache.get_many(list(values))) == 200
    for c in (cache, *alone):
        c.close()


def test_the_same_key_always_lands_on_the_same_server(memcached_pair):
    servers = [m.server for m in memcached_pair]
    first, second = RecordCache(servers), RecordCache(list(reversed(servers)))
    first.set_many({f"k{n}": b"x" for n in range(50)})
    assert len(second.get_many([f"k{n}" for n in range(50)])) == 50
    first.close()
    second.close()


def test_a_server_down_raises_instead_of_missing(memcached_pair):
    cache = RecordCache([m.server for m in memcached_pair], timeout=0.5, connect_timeout=0.5)
    cache.set_many({f"k{n}": b"x" for n in range(50)})
    memcached_pair[1].stop()
    with pytest.raises(CacheUnavailable):
        cache.get_many([f"k{n}" for n in range(50)])
    with pytest.raises(CacheUnavailable):
        cache.set_many({f"k{n}": b"y" for n in range(50)})
    with pytest.raises(CacheUnavailable):
        cache.ping()
    cache.close()


def test_an_item_memcached_refuses_raises(tmp_path):
    small = MemcachedProcess(item_size="1m")
    small.start()
    try:
        cache = RecordCache([small.server])
        with pytest.raises(CacheUnavailable, match="object too large"):
            cache.set_many({"ok": b"x", "big": b"x" * 2_000_000})
        cache.close()
    finally:
        small.stop()


def test_a_refused_item_is_named_and_the_others_of_its_batch_are_stored(tmp_path):
    small = MemcachedProcess(item_size="1m")
    small.start()
    try:
        cache = RecordCache([small.server])
        values = {f"k{n}": b"v%d" % n for n in range(5_000)}  # several write batches
        values["k2500"] = b"x" * 2_000_000
        with pytest.raises(CacheUnavailable, match=r"refused 1 item\(s\), e.g. 'k2500': SERVER_ERROR object too large"):
            cache.set_many(values)
        stored = cache.get_many(list(values))
        assert len(stored) == 4_999 and stored["k4999"] == b"v4999"
        cache.set_many({"after": b"the connection still works"})
        assert cache.get("after") == b"the connection still works"
        cache.close()
    finally:
        small.stop()


def test_an_invalid_key_is_refused_before_anything_is_sent(memcached):
    cache = RecordCache([memcached.server])
    with pytest.raises(ValueError, match="not a valid memcached key"):
        cache.set_many({"fine": b"x", "has space": b"y"})
    assert cache.get("fine") is None
    cache.close()


def test_sentinel_tells_which_servers_lost_their_data(memcached_pair):
    cache = RecordCache([m.server for m in memcached_pair])
    cache.write_sentinel("token")
    assert cache.servers_missing_sentinel() == []
    memcached_pair[0].flush()
    assert cache.servers_missing_sentinel() == [memcached_pair[0].server]
    cache.close()


def test_a_restarted_server_is_reconnected_to_without_an_error(memcached):
    cache = RecordCache([memcached.server])
    cache.set_many({"k": b"v"})
    memcached.restart()
    assert cache.get("k") is None
    cache.set_many({"k": b"w"})
    assert cache.get_many(["k"]) == {"k": b"w"}
    cache.close()


def test_the_first_reads_after_a_restart_answer_instead_of_raising(memcached_pair):
    cache = RecordCache([m.server for m in memcached_pair])
    cache.set_many({f"k{n}": b"v" for n in range(20)})
    for server in memcached_pair:
        server.restart()
    assert cache.get_many([f"k{n}" for n in range(20)]) == {}
    for server in memcached_pair:
        server.restart()
    assert [cache.get(f"k{n}") for n in range(20)] == [None] * 20
    cache.close()


class FakeClock:
    """The breaker's clock, moved by the test instead of waited for."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen(memcached):
    """A memcached holding k=v, then frozen (SIGSTOP): connections accepted, nothing answered."""
    RecordCache([memcached.server]).set_many({"k": b"v"})
    memcached.freeze()
    yield memcached
    memcached.thaw()


def tripped_cache(server: str, clock: FakeClock) -> RecordCache:
    """A cache whose circuit to `server` (frozen) has just opened: a read timed out."""
    cache = RecordCache([server], read_timeout=0.2, connect_timeout=0.2, breaker_failures=3,
                        breaker_cool_down=5, clock=clock)
    with pytest.raises(CacheUnavailable) as raised:
        cache.get("k")
    assert not isinstance(raised.value, CircuitOpen)  # it was tried, and timed out
    return cache


def test_a_frozen_server_fails_fast_after_its_first_timeout(frozen):
    cache = tripped_cache(frozen.server, FakeClock())

    for call in (lambda: cache.get("k"), lambda: cache.get_many(["k"]), cache.ping,
                 lambda: cache.add("k2", b"v"), lambda: cache.set_many({"k": b"w"})):
        with pytest.raises(CircuitOpen):
            call()
    assert cache.breaker(frozen.server).is_open


def test_after_the_cool_down_one_probe_closes_the_circuit_once_the_server_answers(frozen):
    clock = FakeClock()
    cache = tripped_cache(frozen.server, clock)
    frozen.thaw()

    with pytest.raises(CircuitOpen):  # the server is back, but the cool-down is not over
        cache.get("k")
    clock.now += 5

    assert cache.get("k") == b"v"  # the probe
    assert not cache.breaker(frozen.server).is_open
    assert cache.get_many(["k"]) == {"k": b"v"}


def test_a_probe_that_fails_reopens_the_circuit(frozen):
    clock = FakeClock()
    cache = tripped_cache(frozen.server, clock)
    clock.now += 5

    with pytest.raises(CircuitOpen, match="still not answering"):
        cache.get("k")  # probed, and the server did not answer

    assert cache.breaker(frozen.server).failures == 2
    with pytest.raises(CircuitOpen, match="not tried again"):
        cache.get("k")


def test_while_a_probe_is_in_flight_the_other_calls_fail_fast():
    clock = FakeClock()
    breaker = CircuitBreaker("127.0.0.1:1", failures=1, cool_down=5, clock=clock)
    breaker.failed()
    clock.now += 5

    assert breaker.before_call()  # this call probes
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_server_that_answers_with_an_error_does_not_open_its_circuit(memcached):
    cache = RecordCache([memcached.server], breaker_failures=1)
    for _ in range(3):
        with pytest.raises(CacheUnavailable):
            cache.set_many({"big": b"x" * 3_000_000})  # over the item size: memcached says so
    assert not cache.breaker(memcached.server).is_open


def test_one_server_down_opens_only_its_own_circuit(memcached_pair):
    servers = [m.server for m in memcached_pair]
    cache = RecordCache(servers, breaker_failures=2)
    values = {f"k{n}": b"v" for n in range(100)}
    cache.set_many(values)
    alive = RecordCache([servers[0]]).get_many(list(values))
    memcached_pair[1].stop()

    for key in values:
        try:
            cache.get(key)
        except CacheUnavailable:
            pass

    assert cache.breaker(servers[1]).is_open and not cache.breaker(servers[0]).is_open
    assert {key: cache.get(key) for key in alive} == alive
    cache.close()


def test_a_server_that_refuses_connections_opens_its_circuit_after_three_in_a_row(memcached):
    cache = RecordCache([memcached.server], breaker_failures=3)
    memcached.stop()

    for _ in range(3):
        with pytest.raises(CacheUnavailable) as refused:
            cache.get("k")
        assert not isinstance(refused.value, CircuitOpen)

    with pytest.raises(CircuitOpen):
        cache.get("k")
