"""What a data team reads in the Dagster UI, read back by headless Chromium from a real
dagster-webserver showing the built demo: the asset graph, a sync's page, the collection's page,
and the runs list; and, on a small dbt project of its own, a sync held back by a failing dbt test.

Chromium is Debian's `chromium` package (`.ci/run` installs it), driven by playwright's Python
package; playwright's own browser download is not used.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from tests.orchestration.conftest import PEOPLE, running_webserver, wait_until_loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
# The UI fetches over GraphQL after the first paint; a page is read once its text is there.
UI_TIMEOUT_MS = 60_000


@dataclass
class Ui:
    base_url: str
    page: object  # playwright.sync_api.Page

    def open(self, path: str, *, expect: str) -> str:
        """Go to a page, wait until `expect` shows, and return the page's visible text."""
        self.page.goto(self.base_url + path)
        self.page.get_by_text(expect, exact=False).first.wait_for(timeout=UI_TIMEOUT_MS)
        self._skip_welcome_dialog()
        return self.page.inner_text("body")

    def text_once(self, shows, what: str) -> str:
        """The page's visible text once `shows(text)` holds: parts of a page (a metadata table) come
        with a GraphQL answer of their own, after the text `open` waited for."""
        deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
        while not shows(text := self.page.inner_text("body")):
            assert time.monotonic() < deadline, f"{what} not shown within {UI_TIMEOUT_MS / 1000:.0f} s:\n{text[-3000:]}"
            self.page.wait_for_timeout(200)
        return text

    def _skip_welcome_dialog(self) -> None:
        # A first visit offers a newsletter sign-up over the page.
        skip = self.page.get_by_role("button", name="Skip")
        if skip.count():
            skip.first.click()


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module (playwright's sync API allows one session at a time)."""
    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (.ci/run does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browsing(chromium, env: dict[str, str], dagster_home: Path, log: Path) -> Iterator[Ui]:
    """A webserver showing `dagster_home` with `env`, and a fresh Chromium page on it."""
    with running_webserver(env, dagster_home, log) as base_url:
        wait_until_loaded(base_url, log)
        page = chromium.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield Ui(base_url, page)
        finally:
            page.close()


@pytest.fixture(scope="module")
def ui(chromium, demo_built, tmp_path_factory):
    log = tmp_path_factory.mktemp("ui") / "webserver.log"
    with browsing(chromium, demo_built.env, demo_built.dagster_home, log) as ui:
        yield ui


def test_the_collection_graph_tells_the_larder_model_the_sync_and_the_collection_apart(ui):
    text = ui.open("/locations/larder/asset-groups/customers/lineage", expect="customer_profiles_sync")
    labels = set(text.split())
    assert {"customer_profiles_model", "customer_profiles_sync", "customer_engagement_model",
            "customer_engagement_sync", "customers"} <= labels
    # The dbt models upstream are drawn as links into the dbt group, under their own names.
    assert {"customer_profiles", "customer_engagement"} <= labels
    # Kinds under each node: the models read SQL in DuckDB, the syncs write memcached, the collection is an API.
    assert {"SQL", "DuckDB", "memcached", "larder", "api"} <= labels


def test_the_collection_page_shows_the_merge_of_its_syncs_and_its_owners(ui):
    text = ui.open("/assets/collection/customers", expect="Each record merges the fields of")
    assert re.search(r"Each record merges the fields of \d+ syncs \(customer_profiles, customer_engagement", text)
    assert "crm-data@example.com" in text and "growth-analytics@example.com" in text
    assert "records_by_sync" in text


def test_a_sync_page_shows_its_field_mapping_and_the_other_syncs_of_its_collection(ui):
    ui.open("/assets/sync/customer_profiles_sync", expect="Its records merge with those of")
    text = ui.text_once(lambda shown: ["field", "from", "type", "index"] in _rows(shown), "the field mapping table")
    assert "Its records merge with those of customer_engagement" in text
    rows = _rows(text)
    assert ["user_id", "column user_id", "auto", "primary"] in rows
    assert ["email", "column email", "auto", "extra"] in rows
    assert ["first_name", "Liquid {{ full_name | split: ' ' | first }}", "string", ""] in rows
    assert ["90_day_summary", "column summary_90d", "auto", ""] in rows
    assert "crm-data@example.com" in text


def test_the_runs_list_names_the_first_build_and_who_launched_it(ui):
    text = ui.open("/runs", expect="larder_up")
    assert "larder_up" in text  # the target, not a blank hidden job
    assert "Manually launched" not in text
    assert "larder up" in text


# Playwright's sync API keeps an event loop on this thread; Dagster's in-process runs below warn
# that they could not shut its async generators down, which is Playwright's to do.
@pytest.mark.filterwarnings("ignore:coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited:RuntimeWarning")
def test_a_held_back_sync_says_on_its_node_and_its_page_which_dbt_test_holds_it(chromium, tiny_dbt, project_factory, tmp_path):
    project = tiny_dbt.project(project_factory)
    defs = build_definitions(project)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(dagster_home)) as instance:
        tiny_dbt.people_seed.write_text(PEOPLE.replace("2,Bo Chan,DE", "2,Bo Chan,XX"))
        defs.resolve_job_def("dbt_build").execute_in_process(instance=instance, raise_on_error=False)
        defs.resolve_job_def("sync_people").execute_in_process(instance=instance, raise_on_error=False)

    with browsing(chromium, {"LARDER_CONFIG": str(project.path)}, dagster_home, tmp_path / "webserver.log") as ui:
        # The sync node's own check (its only one) is failed; the page waits for it to show.
        graph = ui.open("/locations/larder/asset-groups/people/lineage", expect="0 / 1 Passed")
        assert "people_sync" in graph
        checks = ui.open("/assets/sync/people_sync?view=checks", expect="held back")
        assert "people_not_held_back" in checks
        assert "sync people held back, nothing written" in checks
        assert "dbt test relationships_people_country__code__ref_countries_ on dbt/people failed" in checks


def test_the_overview_shows_the_first_build(ui):
    text = ui.open("/overview", expect="larder_up")
    assert "No runs" not in text


def _rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]
