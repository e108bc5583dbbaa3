"""Whether a sync may write: the failed checks upstream that hold it back.

A sync reads what dbt built. When a blocking dbt test (severity `error`) on its dbt model, or on
any dbt node that model is built from, failed the last time it ran, the model's rows may be the
bad data the test caught: the sync is held back, and says which tests, until they pass again
(or the sync sets `on_failed_dbt_tests: sync`). Larder's own checks hold it back the same way when
the sync sets `block_on_failed_checks: true`.

The verdicts are read from the Dagster instance, so the hold applies however the sync is launched:
in the same run as dbt, by the automation sensor, a schedule or a click.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from orchestration.assets.checks import check_names
from orchestration.assets.keys import DBT_KEY_PREFIX, model_key
from orchestration.config.specs import FailedDbtTests, SyncSpec

DECIDED = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


@dataclass(frozen=True)
class Hold:
    """One failed check that holds a sync back."""

    check: dg.AssetCheckKey
    description: str
    run_id: str

    @property
    def kind(self) -> str:
        return "dbt test" if self.check.asset_key.path[0] == DBT_KEY_PREFIX else "Larder check"

    def as_metadata(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "check": self.check.name,
            "asset": self.check.asset_key.to_user_string(),
            "result": self.description,
            "run_id": self.run_id,
        }

    def __str__(self) -> str:
        about = f": {self.description}" if self.description else ""
        return f"{self.kind} {self.check.name} on {self.check.asset_key.to_user_string()} failed{about}"


def guarding_checks(spec: SyncSpec, dbt_tests: Sequence[dg.AssetCheckKey]) -> tuple[dg.AssetCheckKey, ...]:
    """The checks whose failure holds this sync back, given the dbt tests upstream of its model."""
    guarding = list(dbt_tests) if spec.on_failed_dbt_tests == FailedDbtTests.hold else []
    if spec.block_on_failed_checks:
        guarding += [dg.AssetCheckKey(model_key(spec), name) for name in check_names(spec)]
    return tuple(guarding)


def holds(instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey]) -> list[Hold]:
    """The checks whose latest verdict is a failure of severity error (warnings never hold)."""
    found = []
    for key in checks:
        latest = instance.event_log_storage.get_asset_check_execution_history(key, limit=1, status=DECIDED)
        if not latest or latest[0].status != AssetCheckExecutionRecordStatus.FAILED or latest[0].event is None:
            continue
        evaluation = latest[0].event.dagster_event.asset_check_evaluation_data
        if evaluation.severity == dg.AssetCheckSeverity.ERROR:
            found.append(Hold(key, evaluation.description or "", latest[0].run_id))
    return found


def held_back_message(spec: SyncSpec, found: Sequence[Hold]) -> str:
    lines = [f"sync {spec.name} held back, nothing written: {len(found)} failed check(s) guard it"]
    lines += [f"- {hold}" for hold in found]
    advice = []
    if any(hold.kind == "dbt test" for hold in found):
        advice.append("fix the data and rebuild the dbt model, or set `on_failed_dbt_tests: sync` to sync anyway")
    if any(hold.kind == "Larder check" for hold in found):
        advice.append("fix the model, or set `block_on_failed_checks: false` to sync anyway")
    return "\n".join(lines + [f"To sync again: {'; '.join(advice)}."])
