"""Braze preview: `larder render` runs a template's connected_content calls against a running region."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.preview.braze import PreviewError, parse_call

# Braze's page on the Hightouch integration: its snippet and its table of references and values.
REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "braze-connected-content.txt"


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


def lookup_by_email(stack, tmp_path, capsys, url_filter: str) -> tuple[int, str, str]:
    """Render a lookup of the customer whose email has a space and accents; (status, output, stderr)."""
    template = tmp_path / f"{url_filter}.liquid"
    template.write_text(
        "{% connected_content https://api.example.com/v1/collections/customer/records/email/"
        "{{${email} | " + url_filter + "}} :save c %}{{c.__http_status_code__}} {{c.first_name}}"
    )
    status = main(["render", str(template), "--api", stack.api.base, "--key", stack.key,
                   "--var", "email=zoë müller@example.com"])
    return status, *capsys.readouterr()


def test_url_param_escape_puts_a_value_with_a_space_into_the_url_as_braze_does(stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LARDER_CONFIG", str(stack.project.path))

    escaped = lookup_by_email(stack, tmp_path, capsys, "url_param_escape")
    encoded = lookup_by_email(stack, tmp_path, capsys, "url_encode")

    assert escaped == (0, "200 Zoë", "")
    # url_encode writes the space as '+', which a path keeps: the lookup misses, and the preview says so.
    assert encoded[:2] == (0, "404 ")
    assert "warning: connected_content https://api.example.com/v1/collections/customer/records/email/" \
           "zo%C3%AB+m%C3%BCller%40example.com: HTTP 404" in encoded[2]


def test_a_variable_nobody_gave_is_a_warning_and_strict_makes_it_an_error(stack, tmp_path, monkeypatch, capsys):
    template = tmp_path / "message.liquid"
    template.write_text(
        "{% connected_content https://api.example.com/v1/collections/customer/records/id/{{${user_id}}} :save c %}"
        "Hi {{ c.first_name | default: 'there' }}, {{ ${greeting} }}{% assign shown = 1 %}{{ shown }}"
    )
    monkeypatch.setenv("LARDER_CONFIG", str(stack.project.path))
    common = ["render", str(template), "--api", stack.api.base, "--key", stack.key, "--var", "user_id=12345"]

    lenient = main(common)
    out, err = capsys.readouterr()
    strict = main([*common, "--strict"])
    capsys.readouterr()
    given = main([*common, "--var", "greeting=welcome", "--strict"])
    given_out, given_err = capsys.readouterr()

    assert (lenient, out) == (0, "Hi Jane, 1")
    assert "warning: variable 'greeting' is used but not given (--var greeting=VALUE)" in err
    assert "user_id" not in err and "shown" not in err and "'c'" not in err
    assert strict == 1
    assert (given, given_out, given_err) == (0, "Hi Jane, welcome1", "")


def test_a_connected_content_answer_that_is_not_2xx_fails_a_strict_render(stack, tmp_path, monkeypatch, capsys):
    template = tmp_path / "message.liquid"
    template.write_text("{% connected_content https://api.example.com/v1/collections/nosuch/records/id/1 :save c %}"
                        "{{ c.__http_status_code__ }}")
    monkeypatch.setenv("LARDER_CONFIG", str(stack.project.path))

    status = main(["render", str(template), "--api", stack.api.base, "--key", stack.key, "--strict"])

    out, err = capsys.readouterr()
    assert (status, out) == (1, "404")
    assert "HTTP 404" in err and "unknown_collection" in err
