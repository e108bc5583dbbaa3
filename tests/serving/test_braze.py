"""Braze preview: `larder render` runs a template's connected_content calls against a running region."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestration.cli import main
from serving.braze import PreviewError, parse_call

REFERENCE = Path("/work/shared/reference/braze-hightouch-integration.txt")
if not REFERENCE.exists():
    REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "braze-hightouch-integration.txt"


def reference_page() -> tuple[str, list[tuple[str, str]]]:
    """The page's connected_content snippet and its table of (Liquid reference, returned value)."""
    text = REFERENCE.read_text()
    snippet = re.search(r"\{% connected_content.*?%\}", text, re.S).group(0)
    table = re.findall(r"^(\{\{artists\.[^}]+\}\}) (.+)$", text, re.M)
    return snippet, table


def test_rendering_the_pages_references_saved_as_customer_prints_the_pages_values(stack, tmp_path, monkeypatch, capsys):
    snippet, table = reference_page()
    assert len(table) == 3
    references = [reference.replace("artists.", "customer.") for reference, _ in table]
    template = tmp_path / "message.liquid"
    template.write_text(snippet + "\n" + "\n".join(references) + "\n")
    monkeypatch.setenv("LARDER_CONFIG", str(stack.project.path))

    # The page's URL (personalization.us-west-2.hightouch.com) is sent to the local region instead.
    status = main(["render", str(template), "--api", stack.api.base, "--key", stack.key])

    output = capsys.readouterr().out
    assert status == 0
    assert output.strip().splitlines() == [value for _, value in table]
    assert [value for _, value in table] == ["Aphex Twin", "San Francisco, CA", "Universal Language"]


def test_a_template_reads_braze_attributes_and_the_status_code_of_a_missing_record(stack, tmp_path, monkeypatch, capsys):
    template = tmp_path / "message.liquid"
    template.write_text(
        "{% connected_content https://api.example.com/v1/collections/customer/records/id/{{${user_id}}} "
        ":headers {\"Authorization\": \"Bearer {{api_key}}\"} :save c %}"
        "{{c.__http_status_code__}} {{c.first_name | default: 'friend'}}"
    )
    monkeypatch.setenv("LARDER_CONFIG", str(stack.project.path))

    main(["render", str(template), "--api", stack.api.base, "--var", "user_id=12345", "--var", f"api_key={stack.key}"])
    found = capsys.readouterr().out
    main(["render", str(template), "--api", stack.api.base, "--var", "user_id=404", "--var", f"api_key={stack.key}"])
    missing = capsys.readouterr().out

    assert found == "200 Jane"
    assert missing == "404 friend"


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("https://a.b/x :save c", {"url": "https://a.b/x", "method": "GET", "save": "c"}),
        ("https://a.b/x\n :method post\n :body {\"v\": [\"}\"]}\n :content_type application/json",
         {"method": "POST", "body": '{"v":["}"]}', "headers": {"Content-Type": "application/json"}}),
        ('https://a.b/x :headers {"X-A": "1 \\" }"} :retry', {"headers": {"X-A": '1 " }'}, "save": None}),
    ],
)
def test_connected_content_options_are_parsed_like_braze(markup, expected):
    call = parse_call(markup)

    assert {name: getattr(call, name) for name in expected} == expected


@pytest.mark.parametrize("markup", ["not-a-url :save c", "https://a.b :headers {\"a\": 1", "https://a.b save"])
def test_a_malformed_connected_content_tag_is_a_clear_error(markup):
    with pytest.raises(PreviewError):
        parse_call(markup)
