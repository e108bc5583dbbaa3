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
read the variables passed in.

This environment is separate from orchestration.config.liquid's: that one renders sync fields
strictly; message templates render missing values as empty text, as Braze does.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from liquid import Environment
from liquid.ast import Node
from liquid.exceptions import LiquidError
from liquid.tag import Tag
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG

BRAZE_ATTRIBUTE = re.compile(r"\{\{(-?\s*)\$\{(\w+)\}")
OPTION = re.compile(r":(\w+)")


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


class ConnectedContentNode(Node):
    __slots__ = ("markup",)

    def __init__(self, token, markup):
        super().__init__(token)
        self.markup = markup  # the tag's text as a parsed template: it may contain {{ ... }}

    def __str__(self) -> str:
        return "{% connected_content ... %}"

    def render_to_output(self, context, buffer) -> int:
        text = io.StringIO()
        self.markup.render_with_context(context, text)
        call = parse_call(text.getvalue())
        response = context.env.api_target.send(call)
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


class ConnectedContentTag(Tag):
    name = "connected_content"
    block = False

    def parse(self, stream) -> Node:
        token = stream.eat(TOKEN_TAG)
        expression = stream.expect(TOKEN_EXPRESSION)  # left current: the parser steps past it
        return ConnectedContentNode(token, self.env.from_string(expression.value))


class BrazePreviewEnvironment(Environment):
    """python-liquid with Braze's connected_content tag, sending its calls to `api_target`."""

    def __init__(self, api_target: ApiTarget):
        super().__init__()
        self.api_target = api_target
        self.add_tag(ConnectedContentTag)


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
            end = _json_end(rest, position)
            try:
                options[name] = orjson.loads(rest[position:end])
            except orjson.JSONDecodeError as error:
                raise PreviewError(f"connected_content :{name}: invalid JSON: {error}") from None
            position = end
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


def render_template(source: str, api_target: ApiTarget, variables: Mapping[str, Any] | None = None) -> str:
    """Render a Braze message template, making its Connected Content calls against `api_target`."""
    source = BRAZE_ATTRIBUTE.sub(r"{{\1\2", source)
    environment = BrazePreviewEnvironment(api_target)
    return environment.from_string(source).render(**dict(variables or {}))


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _token_end(text: str, position: int) -> int:
    while position < len(text) and not text[position].isspace():
        position += 1
    return position


def _json_end(text: str, start: int) -> int:
    """The index after the JSON object starting at `start` (braces inside strings ignored)."""
    depth, in_string, escaped = 0, False, False
    for position in range(start, len(text)):
        char = text[position]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return position + 1
    raise PreviewError("connected_content: unbalanced braces in a JSON option")
