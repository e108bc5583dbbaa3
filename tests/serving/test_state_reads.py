"""Store errors are outages (503, a throttled warning); anything else is a bug, logged with its traceback.

A bug cannot be caused for real, so these few tests make a read raise what no store raises.
"""

from __future__ import annotations

import logging
import threading

import pytest

from orchestration.store.state import StateStore
from serving import auth
from serving.auth import KeyRing
from serving.errors import ThrottledLog
from serving.state_reads import StateReads, StateUnavailable


@pytest.fixture
def state(sqlite_url):
    store = StateStore(sqlite_url)
    store.create_all()
    yield store
    store.dispose()


def a_bug():
    raise TypeError("a bug")


def test_a_read_that_fails_with_a_bug_raises_it_and_does_not_mark_the_store_failing(state):
    reads = StateReads(state, deadline=1.0, retry_after=1.0)

    with pytest.raises(TypeError):
        reads(a_bug)

    assert not reads.failing  # a bug is a 500 for this request, not a 503 for every request after it
    assert reads(lambda: 42) == 42
    reads.close()


def test_a_read_the_store_cannot_answer_is_state_unavailable(tmp_path):
    unreadable = StateStore(f"sqlite:///{tmp_path / 'no-such-folder' / 'state.db'}")
    reads = StateReads(unreadable, deadline=1.0, retry_after=60.0)

    with pytest.raises(StateUnavailable):
        reads(lambda: unreadable.list_keys(include_revoked=False))

    assert reads.failing
    reads.close()


def test_a_bug_in_background_work_is_logged_and_frees_its_thread(state, caplog):
    reads = StateReads(state, deadline=1.0, retry_after=1.0, threads=1)
    done = threading.Event()

    with caplog.at_level(logging.ERROR, logger="larder.api"):
        assert reads.in_background(a_bug)
        assert _eventually(lambda: reads.in_background(done.set))  # its one thread is free again
        assert done.wait(5)

    assert "a background read of the state store failed unexpectedly" in caplog.text
    assert "TypeError: a bug" in caplog.text
    reads.close()


def test_keys_that_cannot_load_because_of_a_bug_fail_the_start_instead_of_answering_503(state, monkeypatch):
    monkeypatch.setattr(state, "list_keys", lambda **_: a_bug())
    keyring = KeyRing(state, refresh_seconds=60)

    with pytest.raises(TypeError):
        keyring.start()


def test_keys_that_cannot_load_because_the_store_fails_keep_the_last_ones(state, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(auth, "THROTTLED", ThrottledLog(auth.log))  # not left out after another test's warning
    _, secret = state.create_key("app")
    keyring = KeyRing(state, refresh_seconds=60)
    keyring.reload()
    state.dispose()
    (tmp_path / "state.db").unlink()
    (tmp_path / "state.db").mkdir()  # the file is now a folder: SQLite cannot open it

    with caplog.at_level(logging.WARNING, logger="larder.api"):
        keyring.reload_or_warn()

    assert "cannot reload API keys from the state store" in caplog.text
    assert keyring.authenticate(secret) is not None


def _eventually(check, attempts: int = 500) -> bool:
    for _ in range(attempts):
        if check():
            return True
        threading.Event().wait(0.01)
    return False
