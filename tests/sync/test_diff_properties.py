"""Property: after any sequence of model states and runs, what the API would serve is the mapped model.

Two syncs merge into one collection, each with an extra index; the first sync's delete behaviour
varies. After every run, every index value ever used is looked up in the real memcached: the
expected records answer with exactly their mapped fields, and nothing else resolves. It runs on
each kind of warehouse (DuckDB, Postgres, MariaDB), whose diffs are pushed down differently.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync.conftest import FETCHES, fetching, sync_config

PKS = range(5)
VERSIONS = range(3)

PROFILES = sync_config(
    "profiles", model="select * from profiles", collection="people", indices=["email"],
    fields=[{"column": "id"}, {"column": "name"}, {"column": "email"},
            {"to": "profile.shout", "liquid": "{{ name | upcase }}"}],
    rejections={"max_share": 1.0},
)
STATS = sync_config(
    "stats", model="select * from stats", collection="people", indices=["code"], delete="clear",
    fields=[{"column": "id"}, {"column": "score", "to": "profile.score"}, {"column": "code"}],
    rejections={"max_share": 1.0},
)

# A model state: pk → version (the row's content is a function of pk and version, so index values
# never move between records; that case has its own example-based tests).
model_states = st.dictionaries(st.sampled_from(PKS), st.sampled_from(VERSIONS), max_size=len(PKS))
steps = st.lists(
    st.tuples(st.sampled_from(["profiles", "stats"]), model_states, st.booleans()), min_size=1, max_size=6
)


def profile_row(pk: int, version: int) -> tuple:
    email = None if version == 2 else f"{pk}-{version}@x"  # version 2 has no email: the key must go
    return (pk, f"name {pk}.{version}", email)


def stats_row(pk: int, version: int) -> tuple:
    return (pk, pk * 10 + version, f"c{pk}-{version}")


def mapped(sync: str, pk: int, version: int) -> dict:
    if sync == "profiles":
        _, name, email = profile_row(pk, version)
        return {"id": pk, "name": name, "email": email, "profile": {"shout": name.upper()}}
    _, score, code = stats_row(pk, version)
    return {"id": pk, "profile": {"score": score}, "code": code}


class ExpectedModel:
    """The mapped model, kept by the rules the README states (not by reading the engine's state):
    `clear` drops the sync's fields; `delete` drops them too and hides the whole record, whatever
    the other sync holds, until the deleting sync's model has the row again."""

    def __init__(self, profiles_delete: str, stats_delete: str = "clear"):
        self.delete = {"profiles": profiles_delete, "stats": stats_delete}
        self.fields: dict[str, dict[int, int]] = {"profiles": {}, "stats": {}}  # sync → pk → version
        self.deleted: dict[str, set[int]] = {"profiles": set(), "stats": set()}  # sync → pks it deleted

    def run(self, sync: str, state: dict[int, int]) -> None:
        for pk in set(self.fields[sync]) - set(state):
            if self.delete[sync] in ("clear", "delete"):
                del self.fields[sync][pk]
            if self.delete[sync] == "delete":
                self.deleted[sync].add(pk)
        self.fields[sync].update(state)
        self.deleted[sync] -= set(state)

    def served(self) -> dict[tuple[str, str], dict]:
        """(index, value text) → record, for every lookup that should answer."""
        answers = {}
        for pk in PKS:
            parts = [(s, self.fields[s][pk]) for s in ("profiles", "stats") if pk in self.fields[s]]
            if not parts or any(pk in deleted for deleted in self.deleted.values()):
                continue
            record: dict = {}
            for sync, version in parts:
                for key, value in mapped(sync, pk, version).items():
                    if isinstance(value, dict):
                        record.setdefault(key, {}).update(value)
                    else:
                        record[key] = value
            answers["id", str(pk)] = record
            if record.get("email"):
                answers["email", record["email"]] = record
            if record.get("code"):
                answers["code", record["code"]] = record
        return answers


def every_lookup() -> list[tuple[str, str]]:
    lookups = [("id", str(pk)) for pk in PKS]
    for pk in PKS:
        for version in VERSIONS:
            if profile_row(pk, version)[2]:
                lookups.append(("email", profile_row(pk, version)[2]))
            lookups.append(("code", stats_row(pk, version)[2]))
    return lookups


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profiles_delete=st.sampled_from(["keep", "clear", "delete"]), stats_delete=st.sampled_from(["clear", "delete"]),
       runs=steps, fetch=st.sampled_from(sorted(FETCHES)))
def test_served_records_equal_the_mapped_model_after_any_runs(kind_harness, memcached, tmp_path, profiles_delete,
                                                              stats_delete, runs, fetch):
    with fetching(fetch):
        check_served_records(kind_harness, memcached, tmp_path, profiles_delete, stats_delete, runs)


def check_served_records(harness, memcached, tmp_path, profiles_delete, stats_delete, runs):
    memcached.flush()
    harness.configure(
        {**PROFILES, "delete": profiles_delete}, {**STATS, "delete": stats_delete},
        state_url=f"sqlite:///{tmp_path / f'state-{uuid.uuid4().hex}.db'}",
    )
    expected = ExpectedModel(profiles_delete, stats_delete)
    for sync, state, full_resync in runs:
        if sync == "profiles":
            harness.table("profiles", "id integer, name varchar, email varchar",
                          [profile_row(pk, v) for pk, v in state.items()])
        else:
            harness.table("stats", "id integer, score integer, code varchar",
                          [stats_row(pk, v) for pk, v in state.items()])
        harness.run(sync, full_resync=full_resync)
        expected.run(sync, state)
        answers = expected.served()
        for index, value in every_lookup():
            assert harness.get("people", index, value) == answers.get((index, value)), (index, value)
