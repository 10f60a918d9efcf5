"""Online evals: reference-free graders on a sample of production traces.

    OnlineEval(name="support_live", graders=("grounding", "no_leak"), prompt="support_assistant",
               prompt_label="live", endpoints=("openai-gpt-4o-mini",), sampling_rate=0.5,
               delay=dt.timedelta(minutes=5))

What a run grades, and what the sensor asks it to (docs/ONLINE_EVALS.md):

- the trace's gradeable row (`mallard.traces.gradeable`): Mallard's own traces (any span with a
  `run_id`) are never graded, so grading and replay runs never trigger themselves;
- the filter: prompt name, its label (the version the label points to now) or versions, model,
  endpoint and attributes (`metadata`); errored traces only with `include_errors`;
- the sample: a trace is in it when the hash of its id falls below `sampling_rate`, so a rerun
  picks the same traces and a higher rate keeps every trace a lower one picked;
- the delay: a trace is ready once its newest span started at least `delay` ago (its spans have
  had time to arrive);
- the hour: a trace belongs to the hour its generation started in (the asset's partition).

`changed_traces` reads what the traces table gained since a cursor (its Delta version and the
time up to which traces were ready); `pending` turns those spans into the traces still to
grade, in hour batches; `grade` grades them and `mallard.evals.online_scores` stores each
(eval, trace, grader version) once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.evals.graders.base import GradeContext, Grader, Sample
from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    import pyarrow as pa


def _names(owner: str, field_name: str, value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(v, str) and v for v in items):
        raise DeclarationError(
            f"OnlineEval {owner!r}: {field_name}={value!r} must be a name or a tuple of names"
        )
    return items


@dataclass(frozen=True)
class OnlineEval:
    """Grade a sample of the production traces that match the filter with `graders`, `delay`
    after their last span, at most `batch_size` traces a run (an hour's traces stay together)."""

    name: str
    graders: tuple[str | Grader, ...]
    prompt: str | None = None
    prompt_label: str | None = None
    prompt_versions: tuple[int, ...] = ()
    models: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sampling_rate: float = 1.0
    delay: dt.timedelta = dt.timedelta(0)
    batch_size: int = 500
    include_errors: bool = False
    description: str = ""
    shadow_label: str | None = None
    """A candidate version of `prompt`, by label, to replay in shadow on live traces."""
    shadow_version: int | None = None
    """… or by version number."""
    shadow_traces: int = 60
    """How many of the newest live graded traces (not already of the candidate) a shadow run
    replays."""
    shadow_graders: tuple[str, ...] = ()
    """The graders whose shadow comparison decides the recommendation and may block a promotion
    (empty: all of `graders`); the others are shown, like the offline `Gate.graders`."""
    shadow_endpoints: tuple[str, ...] = ()
    """Replay only live traces these endpoints answered (empty: any), so the comparison is of
    two prompts on one model, not confounded by answers a fallback model gave."""

    def __post_init__(self) -> None:
        check_identifier("OnlineEval", self.name)
        owner = self.name
        graders = (self.graders,) if isinstance(self.graders, str | Grader) else self.graders
        object.__setattr__(self, "graders", tuple(graders))
        if not self.graders:
            raise DeclarationError(
                f"OnlineEval {owner!r}: graders is empty; name the graders (catalog/graders.py "
                "or catalog/online_evals.py) that score each sampled trace"
            )
        for item in self.graders:
            if not isinstance(item, str | Grader):
                raise DeclarationError(
                    f"OnlineEval {owner!r}: graders holds {item!r}; give grader names or Graders"
                )
        object.__setattr__(self, "models", _names(owner, "models", self.models))
        object.__setattr__(self, "endpoints", _names(owner, "endpoints", self.endpoints))
        object.__setattr__(
            self, "shadow_endpoints", _names(owner, "shadow_endpoints", self.shadow_endpoints)
        )
        object.__setattr__(
            self, "shadow_graders", _names(owner, "shadow_graders", self.shadow_graders)
        )
        unknown = [g for g in self.shadow_graders if g not in self.grader_names]
        if unknown:
            raise DeclarationError(
                f"OnlineEval {owner!r}: shadow_graders {unknown} are not among its graders "
                f"{self.grader_names}; name the graders whose shadow comparison decides"
            )
        versions = self.prompt_versions
        versions = (versions,) if isinstance(versions, int) else tuple(versions)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in versions):
            raise DeclarationError(
                f"OnlineEval {owner!r}: prompt_versions={self.prompt_versions!r} must be "
                "version numbers ≥ 1"
            )
        object.__setattr__(self, "prompt_versions", versions)
        if (self.prompt_label or versions) and not self.prompt:
            raise DeclarationError(
                f"OnlineEval {owner!r}: prompt_label/prompt_versions need prompt=<the prompt's "
                "name> (a label or version belongs to one prompt)"
            )
        if self.prompt_label and versions:
            raise DeclarationError(
                f"OnlineEval {owner!r}: give prompt_label or prompt_versions, not both"
            )
        if not isinstance(self.metadata, Mapping) or not all(
            isinstance(k, str) for k in self.metadata
        ):
            raise DeclarationError(
                f"OnlineEval {owner!r}: metadata={self.metadata!r} must map attribute names to "
                "the value (or a list of values) a trace's attributes must hold"
            )
        object.__setattr__(self, "metadata", dict(self.metadata))
        rate = self.sampling_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or math.isnan(rate)
            or not 0 < rate <= 1
        ):
            raise DeclarationError(
                f"OnlineEval {owner!r}: sampling_rate={rate!r} must be within (0, 1]: the share "
                "of matching traces to grade (1 grades every one, 0.1 one in ten)"
            )
        delay = self.delay
        if isinstance(delay, int | float) and not isinstance(delay, bool):
            delay = dt.timedelta(seconds=delay)
        if not isinstance(delay, dt.timedelta) or delay < dt.timedelta(0):
            raise DeclarationError(
                f"OnlineEval {owner!r}: delay={self.delay!r} must be ≥ 0: how long after a "
                "trace's last span to wait before grading it, e.g. dt.timedelta(minutes=5) "
                "(or a number of seconds)"
            )
        object.__setattr__(self, "delay", delay)
        if (self.shadow_label or self.shadow_version is not None) and not self.prompt:
            raise DeclarationError(
                f"OnlineEval {owner!r}: shadow_label/shadow_version need prompt=<the prompt's "
                "name> (the candidate is a version of the prompt the live traces used)"
            )
        if self.shadow_label and self.shadow_version is not None:
            raise DeclarationError(
                f"OnlineEval {owner!r}: give shadow_label or shadow_version, not both"
            )
        if self.shadow_version is not None and (
            not isinstance(self.shadow_version, int) or self.shadow_version < 1
        ):
            raise DeclarationError(
                f"OnlineEval {owner!r}: shadow_version={self.shadow_version!r} must be a "
                "version number ≥ 1"
            )
        if not isinstance(self.shadow_traces, int) or self.shadow_traces < 1:
            raise DeclarationError(
                f"OnlineEval {owner!r}: shadow_traces={self.shadow_traces!r} must be an integer "
                "≥ 1 (how many live traces a shadow run replays)"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise DeclarationError(
                f"OnlineEval {owner!r}: batch_size={self.batch_size!r} must be an integer ≥ 1 "
                "(the most traces one run grades)"
            )

    @property
    def has_shadow(self) -> bool:
        """Whether a candidate prompt version is declared for shadow runs."""
        return bool(self.shadow_label) or self.shadow_version is not None

    @property
    def grader_names(self) -> list[str]:
        return [g if isinstance(g, str) else g.name for g in self.graders]

    def shadow_decides(self, grader: str) -> bool:
        """Whether `grader`'s shadow comparison decides (see `shadow_graders`)."""
        return not self.shadow_graders or grader in self.shadow_graders

    def sampled(self, trace_id: str) -> bool:
        """Whether the trace is in the sample (the same answer on every run)."""
        return self.sampling_rate >= 1 or sample_point(trace_id) < self.sampling_rate

    def matches(self, row: Mapping[str, Any], label_version: int | None = None) -> bool:
        """Whether a gradeable row passes the filter; `label_version` is the version
        `prompt_label` points to (None: the label points nowhere, nothing matches)."""
        if not self.include_errors and row.get("status") == "error":
            return False
        if self.prompt and row.get("prompt_name") != self.prompt:
            return False
        if self.prompt_label and row.get("prompt_version") != label_version:
            return False
        if self.prompt_versions and row.get("prompt_version") not in self.prompt_versions:
            return False
        if self.models and row.get("model") not in self.models:
            return False
        if self.endpoints and row.get("endpoint") not in self.endpoints:
            return False
        if self.metadata:
            attributes = _attributes(row.get("attributes"))
            for key, wanted in self.metadata.items():
                allowed = wanted if isinstance(wanted, list | tuple | set) else [wanted]
                if key not in attributes or attributes[key] not in allowed:
                    return False
        return True


def sample_point(trace_id: str) -> float:
    """Where a trace id falls in [0, 1): the first 60 bits of its SHA-256."""
    return int(hashlib.sha256(trace_id.encode()).hexdigest()[:15], 16) / 16**15


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


class OnlineEvalCatalog:
    """A deployment's online evals with their graders resolved: `graders` are the declared
    graders names may refer to (besides those registered with `@grader`)."""

    def __init__(self, evals: Sequence[OnlineEval], graders: Sequence[Grader] = ()):
        from mallard.evals.graders.registry import registered

        self.evals = list(evals)
        known = {**registered(), **{g.name: g for g in graders}}
        seen: set[str] = set()
        self._graders: dict[str, list[Grader]] = {}
        for ev in self.evals:
            if ev.name in seen:
                raise DeclarationError(f"OnlineEval {ev.name!r} is declared twice")
            seen.add(ev.name)
            resolved = []
            for item in ev.graders:
                if isinstance(item, Grader):
                    resolved.append(item)
                elif item in known:
                    resolved.append(known[item])
                else:
                    raise DeclarationError(
                        f"OnlineEval {ev.name!r}: graders names {item!r}, which is not declared; "
                        "declare it in catalog/graders.py or catalog/online_evals.py (or "
                        f"register it with @grader) — known graders: {sorted(known)}"
                    )
            names = [g.name for g in resolved]
            if len(set(names)) != len(names):
                raise DeclarationError(
                    f"OnlineEval {ev.name!r}: graders {names} name one grader twice"
                )
            self._graders[ev.name] = resolved
        self.by_name = {ev.name: ev for ev in self.evals}

    def get(self, name: str) -> OnlineEval:
        try:
            return self.by_name[name]
        except KeyError:
            raise DeclarationError(
                f"no online eval named {name!r}; declared: {sorted(self.by_name)}"
            ) from None

    def graders(self, name: str) -> list[Grader]:
        self.get(name)
        return list(self._graders[name])


# Reading the traces table ----------------------------------------------------------------------


TRACE_LOOKBACK = dt.timedelta(days=1)
"""How long before its newest span a trace's first span may have started (longer traces are
graded on the spans of their last day)."""


def changed_traces(
    table_path: Path | str,
    *,
    version: int,
    since_version: int | None = None,
    through: dt.datetime | None = None,
    also: Iterable[str] = (),
) -> pa.Table:
    """Every span (at `version`) of the traces that gained a span after `since_version`, or
    have one that started after `through` (held back by a delay), or are among `also` (grades
    to try again). No cursor: every trace."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from mallard.traces.migrate import upgrade

    table = DeltaTable(str(table_path), version=version)
    dataset = table.to_pyarrow_dataset()
    if since_version is None:
        return upgrade(dataset.to_table())
    try:
        earlier = DeltaTable(str(table_path), version=since_version)
    except Exception:  # noqa: BLE001 - that version's log is gone: read it all (scores dedupe)
        return upgrade(dataset.to_table())
    before = set(earlier.get_add_actions().column("path").to_pylist())
    retry = set(also)
    ids: set[str] = set(retry)
    earliest: dt.datetime | None = None
    found = []
    for fragment in dataset.get_fragments():
        if fragment.path not in before:
            found.append(fragment.to_table(columns=["trace_id", "timestamp"]))
    if through is not None:
        found.append(
            dataset.to_table(
                columns=["trace_id", "timestamp"], filter=ds.field("timestamp") > _utc(through)
            )
        )
    for part in found:
        ids.update(part.column("trace_id").to_pylist())
        if part.num_rows:
            first = min(part.column("timestamp").to_pylist())
            earliest = first if earliest is None else min(earliest, first)
    if not ids:
        return upgrade(dataset.schema.empty_table())
    # A trace's other spans started at most TRACE_LOOKBACK before its new ones: read from
    # there, not the whole table (retries, whose times are not known here, read it all).
    window = (
        None
        if retry or earliest is None
        else ds.field("timestamp") >= _utc(earliest - TRACE_LOOKBACK)
    )
    return upgrade(of_traces(dataset.to_table(filter=window), ids))


def read_traces(
    table_path: Path | str,
    *,
    version: int | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    trace_ids: Sequence[str] = (),
) -> pa.Table:
    """Spans of the traces table (at `version`): of `trace_ids`, or of the traces with a span
    starting in [start, end) — every span of each such trace."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from mallard.traces.migrate import upgrade

    dataset = DeltaTable(str(table_path), version=version).to_pyarrow_dataset()
    ids = set(trace_ids)
    if not ids:
        expression = None
        if start is not None:
            expression = ds.field("timestamp") >= _utc(start)
        if end is not None:
            upper = ds.field("timestamp") < _utc(end)
            expression = upper if expression is None else expression & upper
        found = dataset.to_table(columns=["trace_id"], filter=expression)
        ids = set(found.column("trace_id").to_pylist())
    if not ids:
        return upgrade(dataset.schema.empty_table())
    return upgrade(of_traces(dataset.to_table(), ids))


def of_traces(table: pa.Table, trace_ids: Iterable[str]) -> pa.Table:
    """The rows of `table` whose trace_id is one of `trace_ids`. Filtered in memory: merges
    write string_view columns, which pyarrow's `isin` (and its statistics pruning) cannot read."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column("trace_id").cast(pa.string())
    return table.filter(pc.is_in(column, value_set=pa.array(sorted(set(trace_ids)), pa.string())))


def _utc(moment: dt.datetime) -> Any:
    import pyarrow as pa

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return pa.scalar(moment.astimezone(dt.UTC), type=pa.timestamp("us", tz="UTC"))


# Choosing what to grade ------------------------------------------------------------------------


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The UTC hour a moment falls in (the partition a trace belongs to)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Batch:
    """Traces one run grades: every trace of the hours first … last (inclusive) it names."""

    first_hour: dt.datetime
    last_hour: dt.datetime
    trace_ids: list[str]
    first_trace_at: dt.datetime
    last_trace_at: dt.datetime


@dataclass
class Pending:
    """What a look at the traces found: the batches to grade and what was left out, and why."""

    batches: list[Batch]
    ready: int = 0
    held: int = 0
    own: int = 0
    filtered: int = 0
    unsampled: int = 0
    graded: int = 0
    before_start: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "to_grade": self.ready,
            "held_by_delay": self.held,
            "own_calls": self.own,
            "filtered_out": self.filtered,
            "not_sampled": self.unsampled,
            "already_graded": self.graded,
            "before_partitions": self.before_start,
        }


def gradeable(spans: pa.Table, *, cutoff: dt.datetime | None) -> tuple[list[dict], int, int]:
    """(the gradeable rows of the traces whose newest span started by `cutoff`, the number of
    traces held back, the number of Mallard's own traces)."""
    from collections import defaultdict

    from mallard.traces.gradeable import gradeable_row

    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans.to_pylist():
        traces[span["trace_id"]].append(span)
    rows, held, own = [], 0, 0
    for trace in traces.values():
        if any(s.get("run_id") for s in trace):
            own += 1
            continue
        if cutoff is not None and max(s["timestamp"] for s in trace) > cutoff:
            held += 1
            continue
        row = gradeable_row(trace)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: (r["timestamp"], r["trace_id"]))
    return rows, held, own


def select(
    spec: OnlineEval,
    spans: pa.Table,
    *,
    cutoff: dt.datetime | None,
    label_version: int | None = None,
    graded: set[str] | frozenset[str] = frozenset(),
    start: dt.datetime | None = None,
) -> tuple[list[dict[str, Any]], Pending]:
    """The gradeable rows of `spans` the eval grades now: ready by `cutoff`, production, in the
    filter and the sample, not in `graded` (trace ids graded by every grader), at or after the
    partitions' `start`; and the counts of what was left out."""
    rows, held, own = gradeable(spans, cutoff=cutoff)
    pending = Pending([], held=held, own=own)
    chosen = []
    for row in rows:
        if not spec.matches(row, label_version):
            pending.filtered += 1
        elif not spec.sampled(row["trace_id"]):
            pending.unsampled += 1
        elif row["trace_id"] in graded:
            pending.graded += 1
        elif start is not None and row["timestamp"] < start:
            pending.before_start += 1
        else:
            chosen.append(row)
    pending.ready = len(chosen)
    return chosen, pending


def batches(rows: Sequence[Mapping[str, Any]], batch_size: int) -> list[Batch]:
    """Consecutive hours grouped into runs of at most `batch_size` traces (an hour holding more
    is one run of its own: a partition is never split)."""
    by_hour: dict[dt.datetime, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["timestamp"], r["trace_id"])):
        by_hour.setdefault(hour_of(row["timestamp"]), []).append(row)
    out: list[Batch] = []
    group: list[tuple[dt.datetime, list[Mapping[str, Any]]]] = []

    def close() -> None:
        if group:
            members = [r for _, hour_rows in group for r in hour_rows]
            out.append(
                Batch(
                    group[0][0],
                    group[-1][0],
                    [str(r["trace_id"]) for r in members],
                    members[0]["timestamp"],
                    members[-1]["timestamp"],
                )
            )
            group.clear()

    for hour in sorted(by_hour):
        size = sum(len(rows) for _, rows in group)
        if group and size + len(by_hour[hour]) > batch_size:
            close()
        group.append((hour, by_hour[hour]))
    close()
    return out


# Grading ---------------------------------------------------------------------------------------


def sample_of(row: Mapping[str, Any]) -> Sample:
    """A trace's gradeable row as the graders' Sample: the question, the answer, the retrieved
    context and its ids, the attributes as metadata."""
    attributes = _attributes(row.get("attributes"))
    context = row.get("retrieved_text") or ""
    return Sample(
        item_id=str(row["trace_id"]),
        output=row.get("output") or "",
        inputs={"question": row.get("input") or ""},
        category=str(attributes.get("category", "")),
        metadata=attributes,
        contexts=[context] if context else [],
        context_ids=list(row.get("retrieved_ids") or []),
    )


def grade(
    spec: OnlineEval,
    graders: Sequence[Grader],
    rows: Sequence[Mapping[str, Any]],
    ctx: GradeContext,
    *,
    run_id: str,
    traces_version: int | None,
    done: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    trust: Callable[[Grader], tuple[bool, str]] | None = None,
    graded_at: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """online_scores rows for every (trace, grader) of `rows` not in `done` ((trace_id,
    fingerprint) pairs already stored). `trust` says whether a grader's judges are trusted
    (rule graders always are): an untrusted judge's scores are kept but marked."""
    from mallard.evals.online_scores import score_row

    graded_at = graded_at or dt.datetime.now(dt.UTC)
    out: list[dict[str, Any]] = []
    for grader in graders:
        fingerprint = grader.fingerprint(ctx)
        todo = [r for r in rows if (str(r["trace_id"]), fingerprint) not in done]
        if not todo:
            continue
        trusted, why = (True, "") if trust is None or not grader.judges else trust(grader)
        judges = grader.judges
        judge = judges[0] if len(judges) == 1 else None
        endpoint = str(getattr(judge, "endpoint", "") or "") if judge is not None else ""
        identity = ctx.endpoint_identity(endpoint) if endpoint and ctx.client else {}
        for row, result in zip(
            todo, grader.grade_many([sample_of(r) for r in todo], ctx), strict=True
        ):
            out.append(
                score_row(
                    eval_name=spec.name,
                    row=row,
                    grader=grader,
                    fingerprint=fingerprint,
                    grade=result,
                    run_id=run_id,
                    traces_version=traces_version,
                    trusted=trusted,
                    trust_reason=why,
                    judge_endpoint=endpoint,
                    judge_model=str(identity.get("model", "")),
                    graded_at=graded_at,
                )
            )
    return out
