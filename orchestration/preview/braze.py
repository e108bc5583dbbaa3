"""Braze preview: render a message template, running its Connected Content calls against Larder.

    {% connected_content https://personalization.example.com/v1/collections/customer/records/id/12345
         :method get
         :headers {"Authorization": "Bearer {{api_key}}"}
         :content_type application/json
         :save customer %}
    {{customer.recommendations.concerts[0].artist}}

As in Braze, the tag's text is rendered as Liquid first, a JSON answer saved with `:save name`
gains `__http_status_code__`, and an answer that is not saved is written into the message.
For a preview the URL's scheme and host are replaced by the API given (a local region), and
`api_key`, when given, replaces the Authorization header. Braze's `{{${attribute}}}` references
read the variables passed in. Braze's own filters (url_param_escape, json_escape...) are in
`orchestration.preview.filters`.

What Braze would send silently but a preview should say is returned as warnings: a variable the
template reads that nobody gave, and a Connected Content answer that is not 2xx.

This environment is separate from orchestration.config.liquid's: that one renders sync fields
strictly; message templates render missing values as empty text, as Braze does.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from liquid import Environment, Node, Tag, TokenStream
from liquid.builtin.expressions import Identifier  # what Node.template_scope returns
from liquid.exceptions import LiquidError
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG

from orchestration.preview.filters import register_braze_filters

BRAZE_ATTRIBUTE = re.compile(r"\{\{(-?\s*)\$\{(\w+)\}")
OPTION = re.compile(r":(\w+)")
SPACE = re.compile(r"\s*")
WORD = re.compile(r"\S*")
SAVE_OPTION = re.compile(r":save\s+(\w+)")
JSON = json.JSONDecoder()


class PreviewError(LiquidError):
    """A Connected Content call could not be made (bad tag, unreachable API)."""

    def __init__(self, message: str):
        super().__init__(message, token=None)


@dataclass(frozen=True)
class ConnectedContentCall:
    url: str
    method: str
    headers: dict[str, str]
    body: str | None
    save: str | None


@dataclass(frozen=True)
class ApiTarget:
    """Where preview calls go: `base` (scheme://host:port) and an optional key."""

    base: str
    api_key: str | None = None
    timeout: float = 10.0

    def send(self, call: ConnectedContentCall) -> requests.Response:
        headers = dict(call.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            return requests.request(call.method, self._rebase(call.url), headers=headers, data=call.body,
                                    timeout=self.timeout)
        except requests.RequestException as error:
            raise PreviewError(f"connected_content {call.url}: {error}") from error

    def _rebase(self, url: str) -> str:
        base, target = urlsplit(self.base), urlsplit(url)
        return urlunsplit((base.scheme, base.netloc, target.path, target.query, ""))


@dataclass(frozen=True)
class Preview:
    """A rendered message and what Braze would have done silently (missing variables, failed calls)."""

    text: str
    warnings: tuple[str, ...] = ()


class ConnectedContentNode(Node):
    __slots__ = ("markup", "saves")

    def __init__(self, token, markup, saves: str | None):
        super().__init__(token)
        self.markup = markup  # the tag's text as a parsed template: it may contain {{ ... }}
        self.saves = saves  # the `:save` name as written, for static analysis of the template

    def __str__(self) -> str:
        return "{% connected_content ... %}"

    def render_to_output(self, context, buffer) -> int:
        text = io.StringIO()
        self.markup.render_with_context(context, text)
        call = parse_call(text.getvalue())
        response = context.env.api_target.send(call)
        if not 200 <= response.status_code < 300:
            context.env.warnings.append(
                f"connected_content {call.url}: HTTP {response.status_code} {_excerpt(response.text)}"
            )
        if call.save is None:
            return buffer.write(response.text)
        try:
            saved = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            saved = {}
        if isinstance(saved, dict):
            saved["__http_status_code__"] = response.status_code
        context.assign(call.save, saved)
        return 0

    def children(self, static_context, *, include_partials: bool = True):
        return self.markup.nodes

    def template_scope(self):
        return [Identifier(self.saves, token=self.token)] if self.saves else []


class ConnectedContentTag(Tag):
    name = "connected_content"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        token = stream.eat(TOKEN_TAG)
        expression = stream.expect(TOKEN_EXPRESSION)  # left current: the parser steps past it
        saves = SAVE_OPTION.search(expression.value)
        return ConnectedContentNode(token, self.env.from_string(expression.value), saves and saves.group(1))


class BrazePreviewEnvironment(Environment):
    """python-liquid with Braze's tag and filters, sending connected_content calls to `api_target`."""

    def __init__(self, api_target: ApiTarget):
        super().__init__()
        self.api_target = api_target
        self.warnings: list[str] = []
        self.add_tag(ConnectedContentTag)
        register_braze_filters(self)


def parse_call(text: str) -> ConnectedContentCall:
    """The URL and options of a rendered connected_content tag (`:headers {json}`, `:save name`...)."""
    url, rest = (text.split(None, 1) + ["", ""])[:2]
    if not url.startswith(("http://", "https://")):
        raise PreviewError(f"connected_content needs a URL first, found {url!r}")
    options: dict[str, Any] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = OPTION.match(rest, position)
        if match is None:
            raise PreviewError(f"connected_content: expected ':option' at {rest[position:position + 30]!r}")
        name, position = match.group(1), _skip_space(rest, match.end())
        if rest.startswith("{", position):
            try:
                options[name], position = JSON.raw_decode(rest, position)
            except json.JSONDecodeError as error:
                raise PreviewError(f"connected_content :{name}: invalid JSON: {error}") from None
        elif position < len(rest) and rest[position] != ":":
            end = _token_end(rest, position)
            options[name] = rest[position:end]
            position = end
        else:
            options[name] = True
        position = _skip_space(rest, position)
    headers = options.get("headers") or {}
    if not isinstance(headers, dict):
        raise PreviewError("connected_content :headers must be a JSON object")
    if isinstance(options.get("content_type"), str):
        headers.setdefault("Content-Type", options["content_type"])
    body = options.get("body")
    return ConnectedContentCall(
        url=url,
        method=str(options.get("method", "get")).upper(),
        headers={str(k): str(v) for k, v in headers.items()},
        body=orjson.dumps(body).decode() if isinstance(body, dict) else body if isinstance(body, str) else None,
        save=options.get("save") if isinstance(options.get("save"), str) else None,
    )


def render_template(source: str, api_target: ApiTarget, variables: Mapping[str, Any] | None = None) -> Preview:
    """Render a Braze message template, making its Connected Content calls against `api_target`."""
    variables = dict(variables or {})
    environment = BrazePreviewEnvironment(api_target)
    template = environment.from_string(BRAZE_ATTRIBUTE.sub(r"{{\1\2", source))
    missing = [
        f"variable {name!r} is used but not given (--var {name}=VALUE); it renders as empty text"
        for name in template.analyze().globals
        if name not in variables
    ]
    text = template.render(**variables)
    return Preview(text, tuple(missing + environment.warnings))


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _skip_space(text: str, position: int) -> int:
    return SPACE.match(text, position).end()


def _token_end(text: str, position: int) -> int:
    return WORD.match(text, position).end()
