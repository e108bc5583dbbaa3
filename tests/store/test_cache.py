"""RecordCache: one region's pool; failures raise CacheUnavailable, never silent misses."""

from __future__ import annotations

import pytest

from orchestration.store.cache import CacheUnavailable, RecordCache
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
