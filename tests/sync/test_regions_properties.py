"""Property: after any sequence of model changes, region-limited and full runs, rehydrates and a
region disabled and enabled again, a region serves exactly the mapped model after every operation
that covers it, and exactly what it served before after every operation that does not.

Two syncs merge into one collection (so one sync's run also settles what the other left owed);
their delete behaviours vary. Both regions are real memcached processes. The examples pinned
below are the sequences that left a region stale before regions were owed what they missed.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestration.sync import Services, rehydrate_region
from tests.sync.conftest import SyncHarness
from tests.sync.test_diff_properties import (
    PROFILES,
    STATS,
    ExpectedModel,
    every_lookup,
    model_states,
    profile_row,
    stats_row,
)

REGIONS = ("us", "eu")

# ("run", sync, the model's new state or None for no change, regions or None for all, full resync)
runs = st.tuples(st.just("run"), st.sampled_from(["profiles", "stats"]), st.none() | model_states,
                 st.sampled_from([None, ("us",), ("eu",)]), st.booleans())
operations = st.lists(
    st.one_of(runs, runs, runs, st.tuples(st.just("rehydrate"), st.sampled_from(REGIONS)),
              st.tuples(st.just("enable_eu"), st.booleans())),
    min_size=1, max_size=8,
)
ANN, ANN_V2 = {0: 0}, {0: 1}


def _write_model(harness: SyncHarness, sync: str, state: dict[int, int]) -> None:
    if sync == "profiles":
        harness.table("profiles", "id integer, name varchar, email varchar", [profile_row(pk, v) for pk, v in state.items()])
    else:
        harness.table("stats", "id integer, score integer, code varchar", [stats_row(pk, v) for pk, v in state.items()])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profiles_delete=st.sampled_from(["keep", "clear", "delete"]), stats_delete=st.sampled_from(["clear", "delete"]),
       ops=operations)
# A change written to us only, then a run of every region that finds nothing changed.
@example("keep", "clear", [("run", "profiles", ANN, None, False), ("run", "profiles", ANN_V2, ("us",), False),
                           ("run", "profiles", None, None, False)])
# A record deleted while eu was left out; then the other sync's run covers eu.
@example("delete", "clear", [("run", "profiles", ANN, None, False), ("run", "stats", ANN, None, False),
                             ("run", "profiles", {}, ("us",), False), ("run", "stats", None, ("eu",), False)])
# Changes while eu is disabled, then eu enabled again.
@example("clear", "clear", [("run", "profiles", ANN, None, False), ("enable_eu", False),
                            ("run", "profiles", ANN_V2, None, False), ("enable_eu", True),
                            ("run", "stats", None, None, False)])
def test_each_region_serves_the_model_after_every_operation_that_covers_it(
    project_factory, duckdb_url, memcached_pair, tmp_path, profiles_delete, stats_delete, ops,
):
    for process in memcached_pair:
        process.flush()
    servers = {"us": [memcached_pair[0].server], "eu": [memcached_pair[1].server]}
    harness = SyncHarness(project_factory, duckdb_url, servers)
    state_url = f"sqlite:///{tmp_path / f'state-{uuid.uuid4().hex}.db'}"
    syncs = [{**PROFILES, "delete": profiles_delete}, {**STATS, "delete": stats_delete}]

    def configure(eu_enabled: bool) -> None:
        harness.project = project_factory(syncs, state_url=state_url, extra={"regions": {
            "us": {"servers": servers["us"]}, "eu": {"servers": servers["eu"], "enabled": eu_enabled},
        }})

    configure(eu_enabled=True)
    for sync in ("profiles", "stats"):
        _write_model(harness, sync, {})
    expected = ExpectedModel(profiles_delete, stats_delete)
    models: dict[str, dict[int, int]] = {"profiles": {}, "stats": {}}
    served = {region: {} for region in REGIONS}  # what each region must answer now
    eu_enabled = True
    try:
        for op in ops:
            covered: tuple[str, ...] = ()
            if op[0] == "run":
                _, sync, state, regions, full_resync = op
                if state is not None:
                    _write_model(harness, sync, state)
                    models[sync] = state
                if regions == ("eu",) and not eu_enabled:
                    continue  # refused before it starts (tested elsewhere)
                report = harness.run(sync, regions=regions, full_resync=full_resync)
                expected.run(sync, models[sync])
                covered = report.regions
            elif op[0] == "rehydrate":
                services = Services(harness.project)
                try:
                    rehydrate_region(services, op[1])
                finally:
                    services.close()
                covered = (op[1],)
            else:
                eu_enabled = op[1]
                configure(eu_enabled)
            for region in covered:
                served[region] = expected.served()
            for region in REGIONS:
                for index, value in every_lookup():
                    assert harness.get("people", index, value, region=region) == served[region].get((index, value)), (
                        op, region, index, value)
    finally:
        harness.close()
