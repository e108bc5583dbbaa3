"""A small dbt project of the tests' own (not the demo): a seed, two models, a DuckDB file at a relative path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CUSTOMERS_CSV = """\
id,first_name,last_name,email,plan
1,Ada,Lovelace,ada@example.com,pro
2,Alan,Turing,alan@example.com,free
3,Grace,Hopper,grace@example.com,pro
"""

SCHEMA_YML = """\
version: 2

models:
  - name: customers
    description: One row per customer.
    columns:
      - name: customer_id
        data_tests: [unique, not_null]
      - name: first_name
      - name: last_name
      - name: email
      - name: plan
  - name: plans
    columns:
      - name: plan_id
        data_tests: [unique, not_null]
      - name: members
"""


def write_small_dbt_project(root: Path) -> Path:
    """A dbt project in `root` whose profile reads `shop.duckdb` relative to the project, as dbt users write it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(
        "name: shop\nversion: '1.0'\nprofile: shop\nmodel-paths: [models]\nseed-paths: [seeds]\n"
        "models:\n  shop:\n    +materialized: table\n"
    )
    (root / "profiles.yml").write_text(
        "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: shop.duckdb\n      threads: 1\n"
    )
    (root / "seeds").mkdir(exist_ok=True)
    (root / "seeds" / "customers_raw.csv").write_text(CUSTOMERS_CSV)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "customers.sql").write_text(
        "select id as customer_id, first_name, last_name, email, plan from {{ ref('customers_raw') }}\n"
    )
    (root / "models" / "plans.sql").write_text(
        "select plan as plan_id, count(*) as members from {{ ref('customers_raw') }} group by plan\n"
    )
    (root / "models" / "schema.yml").write_text(SCHEMA_YML)
    return root


def dbt(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run dbt in the project, as its users do (profiles.yml in the project)."""
    command = [str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(project), "--profiles-dir", str(project)]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def paste_meta_example(example: Path, schema: Path) -> None:
    """What the example file asks a user to do: its `config:` block, pasted under its model in schema.yml."""
    lines = [line[2:] for line in example.read_text().splitlines() if line.startswith("#   ")]
    model = next(line.split("name:")[1].strip() for line in lines if line.strip().startswith("- name:"))
    block = lines[next(i for i, line in enumerate(lines) if line.strip() == "config:"):]
    text = schema.read_text()
    anchor = f"  - name: {model}\n"
    assert anchor in text, f"{schema} has no model {model}"
    schema.write_text(text.replace(anchor, anchor + "\n".join(block) + "\n", 1))
