"""OTLP/HTTP trace export requests to rows of the traces table.

`decode` reads an `ExportTraceServiceRequest` (opentelemetry-proto) from a request body:
protobuf (`application/x-protobuf`) or OTLP JSON (`application/json`: ids as hex, which the
protobuf JSON mapping would read as base64, so they are turned into bytes first), gzip or not.
`to_rows` maps each span to one row of `mallard.traces.schema`:

| column | from (the first one present wins; the others stay in `attributes`) |
| --- | --- |
| trace_id, span_id, parent_span_id | the span's ids, as lowercase hex |
| span_name, timestamp, latency_ms | name, start time, end − start |
| span_kind | `mallard.span_kind`; `openinference.span.kind` (LLM, RETRIEVER, CHAIN, TOOL…); `gen_ai.operation.name` (chat → llm, execute_tool → tool, embeddings → retrieval, invoke_agent → chain); else what the attributes show (a model or tokens: llm; documents: retrieval; `input.value`: chain); else other |
| model | `gen_ai.response.model`, `gen_ai.request.model`, `llm.model_name` |
| provider | `gen_ai.provider.name`, `gen_ai.system`, `llm.provider`, `llm.system` |
| prompt_tokens | `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt` |
| completion_tokens | `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens`, `llm.token_count.completion` |
| input, output (LLM spans) | the last user message and the answer of `gen_ai.input.messages` / `gen_ai.output.messages`; `llm.input_messages.N.message.*` / `llm.output_messages.N.message.*`; `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`; the span events `gen_ai.content.prompt` / `gen_ai.content.completion`, `gen_ai.{user,system,assistant,tool}.message` / `gen_ai.choice`; else `input.value` / `output.value` |
| input, output (other spans) | `input.value`, `output.value` |
| retrieved_ids, retrieved_text | `retrieval.documents.N.document.id` / `.content` (the texts joined by a blank line); `mallard.retrieved_ids` / `mallard.retrieved_text` |
| status, error | the span status (ERROR → error); `error.type` or the `exception` event's type, and the status message or the exception's message |
| cost_usd | `mallard.cost_usd`, `llm.cost.total`, `gen_ai.usage.cost` |
| user_id, session_id | `mallard.user_id`, `user.id`, `enduser.id`, `langfuse.user.id`; `mallard.session_id`, `session.id`, `gen_ai.conversation.id`, `langfuse.session.id` |
| prompt_name, prompt_version | `mallard.prompt.name`, `langfuse.prompt.name`; `mallard.prompt.version`, `langfuse.prompt.version` |
| endpoint, run_id, cache | `mallard.endpoint`, `mallard.run_id`, `mallard.cache` (default miss) |

Nothing is dropped: every attribute no column took stays in `attributes` under its own key, and
a column that holds only a projection of its source (the last user message of a conversation)
leaves the source there too; the resource's attributes, the instrumentation scope, the events
no column took, links, the trace state and a non-internal OTLP span kind go under `otel.*` keys.
A malformed request raises `TraceInputError` naming the field (OTLP JSON names:
`resourceSpans[0].scopeSpans[0].spans[3].traceId`); nothing of it is kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mallard.traces.schema import SPAN_KINDS

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

PROTOBUF = "application/x-protobuf"
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field: ")
JSON = "application/json"
MAX_INT32 = 2**31 - 1
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TraceInputError(ValueError):
    """A request Mallard cannot store: `field` names the part at fault, `status` the answer."""

    def __init__(self, field: str, message: str, status: int = 400, code: str = "invalid_otlp"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status
        self.code = code


# -- decoding --------------------------------------------------------------------------------------
def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """A gzip body inflated, refused past `max_bytes` (a small body can inflate a lot)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise TraceInputError("body", f"the body is not valid gzip ({exc})") from None
    if len(data) > max_bytes:
        raise TraceInputError(
            "body", f"the body inflates to more than {max_bytes} bytes", 413, "request_too_large"
        )
    if not inflater.eof:
        raise TraceInputError("body", "the gzip body is truncated")
    return data


def decode(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_bytes: int = 16 * 1024 * 1024,
) -> ExportTraceServiceRequest:
    """The export request in `body` (protobuf or OTLP JSON, gzip or identity)."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip(body, max_bytes)
    elif encoding not in ("identity", ""):
        raise TraceInputError(
            "header.content-encoding",
            f"Content-Encoding {encoding!r} is not supported: send gzip or none",
            415,
            "unsupported_media_type",
        )
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise TraceInputError(
                "body", f"the body is not an OTLP ExportTraceServiceRequest in protobuf ({exc})"
            ) from None
        return request
    if kind == JSON:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise TraceInputError("body", "the body is not valid JSON") from None
        if not isinstance(document, dict):
            raise TraceInputError("body", "an OTLP JSON request is an object with resourceSpans")
        _hex_ids_to_base64(document)
        try:
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            field, reason = _locate(document, str(exc))
            raise TraceInputError(field, f"not OTLP JSON: {reason}") from None
        return request
    raise TraceInputError(
        "header.content-type",
        f"Content-Type {kind or '(none)'!r} is not OTLP: send {PROTOBUF} or {JSON}",
        415,
        "unsupported_media_type",
    )


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP JSON writes ids as hex; the protobuf JSON mapping reads bytes as base64."""

    def convert(holder: dict[str, Any], key: str, where: str, size: int) -> None:
        value = holder.get(key)
        if value is None or value == "":
            return
        if not isinstance(value, str):
            raise TraceInputError(f"{where}.{key}", "an id is a string of hex digits")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise TraceInputError(
                f"{where}.{key}", f"{value[:40]!r} is not hex ({size * 2} hex digits)"
            ) from None
        if len(raw) != size:
            raise TraceInputError(
                f"{where}.{key}",
                f"an id of {len(raw)} bytes; it must have {size} ({size * 2} hex digits)",
            )
        holder[key] = base64.b64encode(raw).decode()

    for r, resource_spans in _items(document, "resourceSpans", "body"):
        for s, scope_spans in _items(resource_spans, "scopeSpans", f"resourceSpans[{r}]"):
            where_scope = f"resourceSpans[{r}].scopeSpans[{s}]"
            for i, span in _items(scope_spans, "spans", where_scope):
                where = f"{where_scope}.spans[{i}]"
                convert(span, "traceId", where, 16)
                convert(span, "spanId", where, 8)
                convert(span, "parentSpanId", where, 8)
                for k, link in _items(span, "links", where):
                    convert(link, "traceId", f"{where}.links[{k}]", 16)
                    convert(link, "spanId", f"{where}.links[{k}]", 8)


def _locate(document: dict[str, Any], message: str) -> tuple[str, str]:
    """Where in an OTLP JSON document the protobuf JSON parser failed (it names the field but not
    the span): each resource, scope and span is parsed alone until one fails."""
    from google.protobuf import json_format
    from opentelemetry.proto.trace.v1 import trace_pb2

    def failing(value: Any, message_type: Any) -> str | None:
        try:
            json_format.ParseDict(value, message_type(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            return str(exc)
        return None

    def named(where: str, text: str) -> tuple[str, str]:
        fields = _FAILED_FIELD.findall(text)
        reason = _FAILED_FIELD.sub("", text).rstrip(".")
        return ".".join([where, *fields]) if where else ".".join(fields) or "body", reason

    for r, resource_spans in enumerate(document.get("resourceSpans") or []):
        where = f"resourceSpans[{r}]"
        text = failing(resource_spans, trace_pb2.ResourceSpans)
        if text is None:
            continue
        for s, scope_spans in enumerate(resource_spans.get("scopeSpans") or []):
            where_scope = f"{where}.scopeSpans[{s}]"
            inner = failing(scope_spans, trace_pb2.ScopeSpans)
            if inner is None:
                continue
            for i, span in enumerate(scope_spans.get("spans") or []):
                found = failing(span, trace_pb2.Span)
                if found is not None:
                    return named(f"{where_scope}.spans[{i}]", found)
            return named(where_scope, inner)
        return named(where, text)
    return named("", message)


def _items(holder: Any, key: str, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if not isinstance(holder, dict):
        raise TraceInputError(where, "must be an object")
    values = holder.get(key)
    if values is None:
        return
    if not isinstance(values, list):
        raise TraceInputError(f"{where}.{key}" if where != "body" else key, "must be an array")
    for index, value in enumerate(values):
        if not isinstance(value, dict):
            place = f"{key}[{index}]" if where == "body" else f"{where}.{key}[{index}]"
            raise TraceInputError(place, "must be an object")
        yield index, value


def ok_response(content_type: str | None) -> tuple[bytes, str]:
    """The body of a successful export: an empty `ExportTraceServiceResponse`, in the request's
    encoding."""
    if media_type(content_type) == PROTOBUF:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        return ExportTraceServiceResponse().SerializeToString(), PROTOBUF
    return b"{}", JSON


# -- values ----------------------------------------------------------------------------------------
def any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain Python (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


class _Attributes:
    """A span's attributes, taken one by one into columns; what is left stays in `attributes`."""

    def __init__(self, values: dict[str, Any], where: str) -> None:
        self.values = values
        self.where = where

    def field(self, key: str) -> str:
        return f"{self.where}.attributes[{key}]"

    def has(self, *keys: str) -> bool:
        return self.first(keys) is not None

    def first(self, keys: tuple[str, ...]) -> str | None:
        values = self.values
        for key in keys:
            if key in values:
                return key
        return None

    def text(self, keys: tuple[str, ...], default: str = "") -> str:
        key = self.first(keys)
        if key is None:
            return default
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TraceInputError(self.field(key), f"must be a string, not {_kind(value)}")
        del self.values[key]
        return str(value)

    def integer(self, keys: tuple[str, ...]) -> int:
        key = self.first(keys)
        if key is None:
            return 0
        value = self.values[key]
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
            isinstance(value, str) and value.strip().isdigit()
        ):
            number = int(value)
        if number is None or not 0 <= number <= MAX_INT32:
            raise TraceInputError(
                self.field(key), f"must be a whole number from 0 to {MAX_INT32}, not {value!r}"
            )
        del self.values[key]
        return number

    def number(self, keys: tuple[str, ...]) -> float:
        key = self.first(keys)
        if key is None:
            return 0.0
        value = self.values[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value >= 0)
        ):
            raise TraceInputError(self.field(key), f"must be a finite number ≥ 0, not {value!r}")
        del self.values[key]
        return float(value)

    def indexed(self, prefix: str) -> dict[int, dict[str, Any]]:
        """Flattened lists (`prefix.N.rest`): {N: {rest: value}}, in N order; keys not taken."""
        found: dict[int, dict[str, Any]] = {}
        for key, value in self.values.items():
            if not key.startswith(prefix):
                continue
            index, _, rest = key[len(prefix) :].partition(".")
            if index.isdigit() and rest:
                found.setdefault(int(index), {})[rest] = value
        return dict(sorted(found.items()))

    def drop(self, *keys: str) -> None:
        for key in keys:
            self.values.pop(key, None)


def _kind(value: Any) -> str:
    return {list: "an array", dict: "a key-value list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# -- messages --------------------------------------------------------------------------------------
def _message_text(message: Any) -> str:
    """The text of one message: GenAI `parts` (text parts), or a `content` string or list."""
    if isinstance(message, str):
        return message
    if not isinstance(message, dict):
        return ""
    parts = message.get("parts")
    if isinstance(parts, list):
        return "".join(
            str(p.get("content", ""))
            for p in parts
            if isinstance(p, dict) and p.get("type") == "text"
        )
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _plain(messages: list[Any], role: str, *, finish_reason: bool = False) -> bool:
    """Whether `messages` is one message of `role` holding only text (what a column keeps);
    `finish_reason`: a finish reason is kept elsewhere (gen_ai.response.finish_reasons)."""
    if len(messages) != 1 or not isinstance(messages[0], dict):
        return False
    message = messages[0]
    allowed = (
        {"role", "parts", "content", "finish_reason"}
        if finish_reason
        else {"role", "parts", "content"}
    )
    if message.get("role") != role or not set(message) <= allowed:
        return False
    parts = message.get("parts")
    if parts is not None:
        return (
            isinstance(parts, list)
            and len(parts) == 1
            and isinstance(parts[0], dict)
            and parts[0].get("type") == "text"
            and set(parts[0]) <= {"type", "content"}
        )
    return isinstance(message.get("content"), str)


def _asked(messages: list[Any]) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    chosen = users[-1] if users else (messages[-1] if messages else "")
    return _message_text(chosen)


def _answered(messages: list[Any]) -> str:
    return "\n".join(t for t in (_message_text(m) for m in messages) if t)


def _json_list(attrs: _Attributes, key: str) -> list[Any] | None:
    value = attrs.values.get(key)
    if value is None:
        return None
    if isinstance(value, list):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise TraceInputError(attrs.field(key), "must be a JSON array of messages") from None
    else:
        raise TraceInputError(attrs.field(key), f"must be a JSON array, not {_kind(value)}")
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        raise TraceInputError(attrs.field(key), "must be a JSON array of messages")
    return parsed


def _flat_messages(attrs: _Attributes, prefix: str, shape: str) -> tuple[list[Any], list[str]]:
    """Flattened messages (`llm.input_messages.0.message.role`, `gen_ai.prompt.0.content`)."""
    found = attrs.indexed(prefix)
    messages, keys = [], []
    for index, fields in found.items():
        if shape == "openinference":
            message = {
                k.removeprefix("message."): v for k, v in fields.items() if k.startswith("message.")
            }
        else:
            message = dict(fields)
        messages.append(message)
        keys += [f"{prefix}{index}.{k}" for k in fields]
    return messages, keys


EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def _event_content(values: dict[str, Any]) -> Any:
    for key in ("content", "gen_ai.event.content", "message"):
        value = values.get(key)
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            if isinstance(parsed, dict) and key != "message" and "content" in parsed:
                return parsed["content"]
            return parsed
        if value is not None:
            return value
    return None


def _event_messages(events: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[int]]:
    """Messages of the older conventions' span events: `gen_ai.content.prompt` /
    `gen_ai.content.completion` (a `gen_ai.prompt` / `gen_ai.completion` attribute) and the
    per-message events. Returns (input messages, output messages, the events' indexes)."""
    inputs: list[Any] = []
    outputs: list[Any] = []
    used: list[int] = []
    for index, event in enumerate(events):
        name, values = event["name"], event["attributes"]
        if name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            key = "gen_ai.prompt" if name.endswith("prompt") else "gen_ai.completion"
            raw = values.get(key)
            if raw is None:
                continue
            try:
                parsed = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                parsed = raw
            batch = parsed if isinstance(parsed, list) else [parsed]
            if not isinstance(parsed, list) and isinstance(parsed, str):
                batch = [
                    {"role": "user" if key == "gen_ai.prompt" else "assistant", "content": parsed}
                ]
            (inputs if key == "gen_ai.prompt" else outputs).extend(batch)
            used.append(index)
        elif name in EVENT_ROLES:
            content = _event_content(values)
            if content is None:
                continue
            inputs.append(
                {
                    "role": EVENT_ROLES[name],
                    "content": _message_text(content) if isinstance(content, dict) else content,
                }
            )
            used.append(index)
        elif name == "gen_ai.choice":
            content = _event_content(values)
            if content is None:
                continue
            text = _message_text(content) if isinstance(content, dict) else str(content)
            outputs.append({"role": "assistant", "content": text})
            used.append(index)
    return inputs, outputs, used


# -- one span --------------------------------------------------------------------------------------
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
COST = ("mallard.cost_usd", "llm.cost.total", "gen_ai.usage.cost")
USER = ("mallard.user_id", "user.id", "enduser.id", "langfuse.user.id")
SESSION = ("mallard.session_id", "session.id", "gen_ai.conversation.id", "langfuse.session.id")
PROMPT_NAME = ("mallard.prompt.name", "langfuse.prompt.name")
PROMPT_VERSION = ("mallard.prompt.version", "langfuse.prompt.version")
OPENINFERENCE_KINDS = {
    "LLM": "llm",
    "RETRIEVER": "retrieval",
    "RERANKER": "retrieval",
    "EMBEDDING": "retrieval",
    "CHAIN": "chain",
    "AGENT": "chain",
    "GUARDRAIL": "chain",
    "EVALUATOR": "chain",
    "TOOL": "tool",
}
EXACT_OPENINFERENCE = {"LLM", "RETRIEVER", "CHAIN", "TOOL"}  # the column holds them whole
OPERATION_KINDS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "retrieval",
    "retrieval": "retrieval",
    "execute_tool": "tool",
    "invoke_agent": "chain",
    "create_agent": "chain",
    "invoke_workflow": "chain",
}
OTLP_KINDS = {2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_ERROR = 2


def _span_kind(attrs: _Attributes) -> str:
    values = attrs.values
    if "mallard.span_kind" in values:
        kind = attrs.text(("mallard.span_kind",))
        if kind not in SPAN_KINDS:
            raise TraceInputError(
                attrs.field("mallard.span_kind"), f"{kind!r} is not one of {', '.join(SPAN_KINDS)}"
            )
        return kind
    marked = values.get("openinference.span.kind")
    if isinstance(marked, str) and marked.upper() in OPENINFERENCE_KINDS:
        if marked.upper() in EXACT_OPENINFERENCE:
            del values["openinference.span.kind"]
        return OPENINFERENCE_KINDS[marked.upper()]
    operation = values.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in OPERATION_KINDS:
        return OPERATION_KINDS[operation]
    if attrs.has(
        *MODEL, *INPUT_TOKENS, *OUTPUT_TOKENS, "gen_ai.input.messages", "gen_ai.output.messages"
    ):
        return "llm"
    if any(k.startswith(("llm.input_messages.", "gen_ai.prompt.")) for k in values):
        return "llm"
    if any(k.startswith("retrieval.documents") for k in values) or attrs.has(
        "mallard.retrieved_ids"
    ):
        return "retrieval"
    if attrs.has("tool.name", "gen_ai.tool.name"):
        return "tool"
    if attrs.has("input.value", "output.value"):
        return "chain"
    return "other"


def _conversation(
    attrs: _Attributes, events: list[dict[str, Any]]
) -> tuple[str | None, str | None, list[int]]:
    """The input and output text of an LLM span, from the first message convention it uses."""
    asked: str | None = None
    answered: str | None = None
    used_events: list[int] = []
    current_in = _json_list(attrs, "gen_ai.input.messages")
    current_out = _json_list(attrs, "gen_ai.output.messages")
    if current_in is not None:
        asked = _asked(current_in)
        if _plain(current_in, "user") and "gen_ai.system_instructions" not in attrs.values:
            attrs.drop("gen_ai.input.messages")
    if current_out is not None:
        answered = _answered(current_out)
        reasons = "gen_ai.response.finish_reasons" in attrs.values
        if _plain(current_out, "assistant", finish_reason=reasons):
            attrs.drop("gen_ai.output.messages")
    for prefix_in, prefix_out, shape in (
        ("llm.input_messages.", "llm.output_messages.", "openinference"),
        ("gen_ai.prompt.", "gen_ai.completion.", "flat"),
    ):
        if asked is None:
            messages, keys = _flat_messages(attrs, prefix_in, shape)
            if messages:
                asked = _asked(messages)
                if _plain(messages, "user"):
                    attrs.drop(*keys)
        if answered is None:
            messages, keys = _flat_messages(attrs, prefix_out, shape)
            if messages:
                answered = _answered(messages)
                if _plain(messages, "assistant"):
                    attrs.drop(*keys)
    if asked is None or answered is None:
        inputs, outputs, used = _event_messages(events)
        if asked is None and inputs:
            asked = _asked(inputs)
        if answered is None and outputs:
            answered = _answered(outputs)
        if inputs or outputs:
            plain = (not inputs or _plain(inputs, "user")) and (
                not outputs or _plain(outputs, "assistant")
            )
            if plain:
                used_events = used
    return asked, answered, used_events


def _documents(attrs: _Attributes) -> tuple[list[str], str] | None:
    found = attrs.indexed("retrieval.documents.")
    if found:
        ids, texts = [], []
        for index, fields in found.items():
            doc_id = fields.get("document.id", "")
            content = fields.get("document.content", "")
            ids.append("" if doc_id is None else str(doc_id))
            if content:
                texts.append(str(content))
            attrs.drop(f"retrieval.documents.{index}.document.id")
            attrs.drop(f"retrieval.documents.{index}.document.content")
        return ids, "\n\n".join(texts)
    listed = attrs.values.get("retrieval.documents")
    if isinstance(listed, list) and all(isinstance(d, dict) for d in listed):
        ids, texts, whole = [], [], True
        for doc in listed:
            doc_id = doc.get("document.id", doc.get("id", ""))
            content = doc.get("document.content", doc.get("content", ""))
            ids.append(str(doc_id))
            if content:
                texts.append(str(content))
            whole &= set(doc) <= {"document.id", "document.content", "id", "content"}
        if whole:
            attrs.drop("retrieval.documents")
        return ids, "\n\n".join(texts)
    if "mallard.retrieved_ids" in attrs.values or "mallard.retrieved_text" in attrs.values:
        raw = attrs.values.get("mallard.retrieved_ids", [])
        if not isinstance(raw, list) or not all(isinstance(v, str | int) for v in raw):
            raise TraceInputError(attrs.field("mallard.retrieved_ids"), "must be an array of ids")
        attrs.drop("mallard.retrieved_ids")
        return [str(v) for v in raw], attrs.text(("mallard.retrieved_text",))
    return None


def _time(nanos: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=nanos // 1000)


def span_row(
    span: Any, where: str, resource: dict[str, Any], scope: dict[str, Any]
) -> dict[str, Any]:
    """One span as a row of the traces table (see the module docstring)."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or not any(trace_id):
        raise TraceInputError(f"{where}.traceId", "must be 16 bytes (32 hex digits), not all zero")
    if len(span_id) != 8 or not any(span_id):
        raise TraceInputError(f"{where}.spanId", "must be 8 bytes (16 hex digits), not all zero")
    if parent and len(parent) != 8:
        raise TraceInputError(f"{where}.parentSpanId", "must be empty or 8 bytes (16 hex digits)")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start <= 0:
        raise TraceInputError(f"{where}.startTimeUnixNano", "must be set (nanoseconds since 1970)")
    if end < start:
        raise TraceInputError(
            f"{where}.endTimeUnixNano", "must be set and not before startTimeUnixNano"
        )
    attrs = _Attributes(attributes(span.attributes), where)
    events = [
        {
            "name": event.name,
            "time_unix_nano": event.time_unix_nano,
            "attributes": attributes(event.attributes),
        }
        for event in span.events
    ]
    kind = _span_kind(attrs)
    row: dict[str, Any] = {
        "trace_id": trace_id.hex(),
        "span_id": span_id.hex(),
        "parent_span_id": parent.hex(),
        "span_kind": kind,
        "span_name": span.name,
        "timestamp": _time(start),
        "latency_ms": (end - start) / 1e6,
    }
    row["model"] = attrs.text(MODEL)
    row["provider"] = attrs.text(PROVIDER)
    row["prompt_tokens"] = attrs.integer(INPUT_TOKENS)
    row["completion_tokens"] = attrs.integer(OUTPUT_TOKENS)
    row["cost_usd"] = attrs.number(COST)
    row["user_id"] = attrs.text(USER)
    row["session_id"] = attrs.text(SESSION)
    row["prompt_name"] = attrs.text(PROMPT_NAME)
    row["prompt_version"] = attrs.integer(PROMPT_VERSION)
    row["endpoint"] = attrs.text(("mallard.endpoint",))
    row["run_id"] = attrs.text(("mallard.run_id",))
    row["cache"] = attrs.text(("mallard.cache",), "miss")
    asked: str | None = None
    answered: str | None = None
    used_events: list[int] = []
    if kind == "llm":
        asked, answered, used_events = _conversation(attrs, events)
    if asked is None:
        asked = attrs.text(("input.value",))
    if answered is None:
        answered = attrs.text(("output.value",))
    row["input"], row["output"] = asked, answered
    documents = _documents(attrs)
    row["retrieved_ids"], row["retrieved_text"] = documents or ([], "")
    # Errors: the span status, the GenAI error.type, the exception event (kept as an event).
    failed = span.status.code == STATUS_ERROR or "error.type" in attrs.values
    error_type = attrs.text(("error.type",))
    message = span.status.message
    exception = next((e for e in events if e["name"] == "exception"), None)
    if exception is not None:
        failed = True
        error_type = error_type or str(exception["attributes"].get("exception.type", ""))
        message = message or str(exception["attributes"].get("exception.message", ""))
    row["status"] = "error" if failed else "ok"
    row["error"] = (
        (f"{error_type}: {message}" if error_type and message else error_type or message or "error")
        if failed
        else ""
    )
    extra = attrs.values
    left = [e for i, e in enumerate(events) if i not in used_events]
    if left:
        extra["otel.events"] = [
            {
                "name": e["name"],
                "time": _time(e["time_unix_nano"]).isoformat(),
                "attributes": e["attributes"],
            }
            if e["time_unix_nano"]
            else {"name": e["name"], "attributes": e["attributes"]}
            for e in left
        ]
    if span.links:
        extra["otel.links"] = [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                **({"attributes": attributes(link.attributes)} if link.attributes else {}),
            }
            for link in span.links
        ]
    if span.kind in OTLP_KINDS:
        extra["otel.span_kind"] = OTLP_KINDS[span.kind]
    if span.trace_state:
        extra["otel.trace_state"] = span.trace_state
    if span.status.code == 1:
        extra["otel.status"] = "ok"
    dropped = span.dropped_attributes_count + span.dropped_events_count + span.dropped_links_count
    if dropped:
        extra["otel.dropped"] = {
            "attributes": span.dropped_attributes_count,
            "events": span.dropped_events_count,
            "links": span.dropped_links_count,
        }
    if resource:
        extra["otel.resource"] = resource
    if scope:
        extra["otel.scope"] = scope
    row["attributes"] = json.dumps(extra, default=str, ensure_ascii=False)
    return row


def to_rows(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Every span of an export request as a row; raises TraceInputError at the first bad one."""
    rows = []
    for r, resource_spans in enumerate(request.resource_spans):
        resource = attributes(resource_spans.resource.attributes)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope: dict[str, Any] = {}
            if scope_spans.scope.name:
                scope["name"] = scope_spans.scope.name
            if scope_spans.scope.version:
                scope["version"] = scope_spans.scope.version
            if scope_spans.scope.attributes:
                scope["attributes"] = attributes(scope_spans.scope.attributes)
            for i, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                rows.append(span_row(span, where, resource, scope))
    return rows
