"""A running API picks up configuration changes by itself: no restart, no signal.

Each test changes the files of a served project (a new sync file, a changed mapping, a broken
larder.yaml) while gunicorn runs, then polls the API. The API promises to reload within 5 s; the
polls allow 10.
"""

from __future__ import annotations

import os
import signal
import time

import yaml

from tests.serving.conftest import ORDERS_SYNC, gunicorn_workers

RELOAD_WAIT_SECONDS = 10


def write_sync(stack, sync: dict) -> None:
    (stack.root / "syncs" / f"{sync['name']}.yaml").write_text(yaml.safe_dump(sync, sort_keys=False))


def reload_project(stack):
    from orchestration.config.load import load_project

    stack.project = load_project(stack.project.path)


def eventually(ask, until):
    """`ask()` until `until(answer)` holds or RELOAD_WAIT_SECONDS pass; the last answer."""
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while True:
        answer = ask()
        if until(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def poll(stack, path: str, until):
    """GET `path` until `until(response)` holds, for up to RELOAD_WAIT_SECONDS; the last response."""
    return eventually(lambda: stack.get(path), until)


def test_a_collection_added_to_a_running_stack_is_served_without_a_restart(fresh_stack):
    pid = fresh_stack.api.process.pid
    assert fresh_stack.get("/v1/collections/tickets/records/ticket_id/7").json()["error"]["code"] == "unknown_collection"

    write_sync(fresh_stack, {
        "name": "tickets",
        "model": {"sql": "select 7 as ticket_id, 'open' as status"},
        "collection": "tickets",
        "primary_index": "ticket_id",
        "fields": [{"column": "ticket_id"}, {"column": "status"}],
    })
    reload_project(fresh_stack)
    fresh_stack.sync("tickets")

    response = poll(fresh_stack, "/v1/collections/tickets/records/ticket_id/7", lambda r: r.status_code == 200)
    assert response.status_code == 200, response.text
    assert response.json() == {"ticket_id": 7, "status": "open"}
    # every worker serves it (each reloads on its own), and it is the same gunicorn: nothing was restarted
    statuses = eventually(lambda: set(fresh_stack.statuses("/v1/collections/tickets/records/ticket_id/7")),
                          lambda answer: answer == {200})
    assert statuses == {200}
    assert fresh_stack.api.process.pid == pid and fresh_stack.api.process.poll() is None
    assert "tickets" in {c["name"] for c in fresh_stack.get("/v1/collections").json()["collections"]}


def test_a_changed_field_mapping_is_served_in_its_new_shape_with_its_new_index(fresh_stack):
    before = fresh_stack.get("/v1/collections/orders/records/order_id/1")
    assert before.json() == {"order_id": 1, "status": "open"}

    write_sync(fresh_stack, {
        **ORDERS_SYNC,
        "model": {"sql": "select 1 as order_id, 'open' as status, 'A-1' as reference"},
        "indices": ["reference"],
        "fields": [{"column": "order_id"}, {"column": "status", "to": "state.name"}, {"column": "reference"}],
    })
    reload_project(fresh_stack)
    fresh_stack.sync("orders")

    by_reference = poll(fresh_stack, "/v1/collections/orders/records/reference/A-1", lambda r: r.status_code == 200)
    assert by_reference.status_code == 200, by_reference.text
    assert by_reference.json() == {"order_id": 1, "state": {"name": "open"}, "reference": "A-1"}
    assert fresh_stack.get("/v1/collections/orders/records/order_id/1").json() == by_reference.json()
    statuses = eventually(lambda: set(fresh_stack.statuses("/v1/collections/orders/records/reference/A-1")),
                          lambda answer: answer == {200})
    assert statuses == {200}


def test_an_invalid_configuration_keeps_the_last_good_one_and_readyz_says_why(fresh_stack):
    config = fresh_stack.project.path
    good = config.read_text()
    ready = fresh_stack.get("/readyz").json()
    assert ready["config"]["status"] == "current"

    config.write_text(good + "\nregions_typo: {}\n")
    stale = poll(fresh_stack, "/readyz", lambda r: r.json().get("config", {}).get("status") == "stale")

    assert stale.status_code == 200  # still ready: the last good configuration serves
    assert stale.json()["config"]["status"] == "stale"
    assert "regions_typo" in stale.json()["config"]["error"]
    assert fresh_stack.get("/v1/collections/customer/records/id/12345").status_code == 200
    log = fresh_stack.api.log.read_text()
    assert "does not load" in log and "regions_typo" in log

    config.write_text(good)
    again = poll(fresh_stack, "/readyz", lambda r: r.json()["config"]["status"] == "current")
    assert again.json()["config"]["status"] == "current"
    assert "error" not in again.json()["config"]


def test_a_worker_replaced_while_the_configuration_is_invalid_starts_from_the_last_good_one(fresh_stack):
    config = fresh_stack.project.path
    config.write_text(config.read_text() + "\nregions_typo: {}\n")
    poll(fresh_stack, "/readyz", lambda r: r.json()["config"]["status"] == "stale")

    workers = worker_pids(fresh_stack.api.process.pid)
    os.kill(workers[0], signal.SIGKILL)  # gunicorn boots a new worker in its place
    replaced = eventually(lambda: worker_pids(fresh_stack.api.process.pid),
                          lambda pids: len(pids) == len(workers) and workers[0] not in pids)

    assert workers[0] not in replaced and fresh_stack.api.process.poll() is None
    statuses = eventually(lambda: fresh_stack.statuses("/v1/collections/customer/records/id/12345"),
                          lambda answer: set(answer) == {200})
    assert set(statuses) == {200}


def worker_pids(serve: int) -> list[int]:
    """The gunicorn workers under `larder serve` (a supervisor of nginx and the gunicorn master)."""
    return [int(pid) for pid in gunicorn_workers(serve)]
