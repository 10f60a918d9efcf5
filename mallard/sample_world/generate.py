"""Generate the Pondstream sample world, deterministically from a seed and an end date.

Pondstream is a subscription streaming service observed over `days` days ending on `end_date`:
customers, daily usage, billing events (with late corrections), support tickets and churn
labels, plus the LLM side (help-centre corpus, eval questions, a judge calibration slice and
production assistant traces). Before `shift_day` customers churn when they stop watching
(disengagement) or a failed payment is never sorted out; from `shift_day` a faulty TV/console
app release crashes sessions on the models it breaks, and the crashes drive churn. `Dynamics`
holds the coefficients; docs/SAMPLE_WORLD.md tells the story and why the features see it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mallard.config import SAMPLE_DAYS

HELPCENTRE_DIR = Path(__file__).parent / "helpcentre"

PLANS = np.array(["basic", "standard", "premium"])
PLAN_PRICE = np.array([7.99, 12.99, 17.99])
REGIONS = np.array(["north_america", "europe", "latin_america", "asia_pacific"])
DEVICES = np.array(["tv", "mobile", "web", "console", "tablet"])
# The faulty release of day `shift_day` ships to these devices.
FAULTY_DEVICES = np.array([True, False, False, True, False])
TICKET_CATEGORIES = np.array(["playback", "billing", "account", "devices"])


@dataclass(frozen=True)
class WorldSpec:
    """What to generate. Same spec → identical data."""

    end_date: dt.date
    seed: int = 7
    customers: int = 20_000
    days: int = SAMPLE_DAYS
    shift_day: int = 60
    label_horizon_days: int = 14
    warmup_days: int = 30
    trace_days: int = 14
    traces_per_day: int = 150
    trace_regression_day: int = 10

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(
                f"customers={self.customers}: the sample world needs at least 1 customer "
                "(set MALLARD_SAMPLE_SCALE or --scale above 0)"
            )
        if self.warmup_days < 0:
            raise ValueError(f"warmup_days={self.warmup_days} must be ≥ 0")
        if not 0 < self.shift_day < self.days:
            raise ValueError(f"shift_day={self.shift_day} must lie inside the {self.days} days")

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days - 1)

    def day_start(self, day: int) -> pd.Timestamp:
        """UTC midnight starting simulated day `day` (0-based)."""
        return pd.Timestamp(self.start_date + dt.timedelta(days=day), tz="UTC")


@dataclass
class WorldSummary:
    """What was generated: files, row counts and the statistics that show the shift."""

    spec: dict[str, Any]
    files: dict[str, str]
    rows: dict[str, int]
    shift: dict[str, dict[str, float]] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    """Days added after generation (`extend_world`): from which end date, how many."""


def _timestamps(spec: WorldSpec, day: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    start = np.datetime64(spec.start_date.isoformat(), "us")
    return start + day.astype("timedelta64[D]") + seconds.astype("timedelta64[s]")


@dataclass(frozen=True)
class Dynamics:
    """How Pondstream's customers behave: the coefficients behind docs/SAMPLE_WORLD.md's story.

    Rates are per customer and day. Satisfaction (slow) and mood (fast) are AR(1) processes
    with unit variance; `taste` is a lognormal constant per customer.
    """

    # Viewing: sessions ~ Poisson(taste · e^(0.3·satisfaction) · weekend); minutes per session
    # ~ Gamma with mean `session_minutes` · e^(mood …). Mood is the week one binges a new series
    # and the quiet week after: it moves viewing, not loyalty, and it passes.
    taste_spread: float = 0.3
    satisfaction_persistence: float = 0.97
    viewing_satisfaction: float = 0.3
    mood_persistence: float = 0.8
    viewing_mood: float = 1.0
    session_minutes: float = 40.0
    session_shape: float = 2.0
    # Disengagement: unhappy customers with little taste for the catalogue start to lapse
    # (logit per day); a lapsing customer watches a quarter of before and, after at least
    # `lapse_min_days`, cancels with probability `lapse_cancel` a day (a few recover).
    lapse_base: float = -6.0
    lapse_satisfaction: float = 1.0
    lapse_taste: float = 2.0
    lapse_viewing: float = 0.25
    lapse_min_days: int = 14
    lapse_cancel: float = 0.12
    lapse_recover: float = 0.003
    # Playback: benign errors (a retry works) on every device; from the shift day the faulty
    # release crashes sessions on the TV and console models it breaks. Frustration is the
    # decaying count of crashes; crashes, not errors, drive customers away.
    benign_error_rate: float = 0.02
    broken_share: float = 0.5
    crash_rate: float = 0.4
    minor_crash_rate: float = 0.02
    crash_minutes: float = 0.8
    frustration_decay: float = 0.97
    crash_churn_base: float = -9.0
    crash_churn_slope: float = 0.6
    # Billing: a failed charge is retried after 3 and 7 days; when the last retry fails the
    # subscription ends with probability `involuntary_churn`, unless the customer wrote to
    # support about it (support updates the card).
    retry_success: tuple[float, float] = (0.5, 0.4)
    involuntary_churn: float = 0.6
    # People also leave for reasons no data shows (moving, money, a rival's hit show).
    background_churn: float = 0.0008


DYNAMICS = Dynamics()


def _sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Population:
    """Every customer's attributes and state at the end of the last simulated day: all a further
    day depends on (saved with the world, so that days can be added to it)."""

    signup_day: np.ndarray
    plan: np.ndarray
    region: np.ndarray
    device: np.ndarray
    age: np.ndarray
    taste: np.ndarray
    payment_risk: np.ndarray
    satisfaction: np.ndarray
    crashiness: np.ndarray
    mood: np.ndarray
    churn_day: np.ndarray
    lapsing: np.ndarray
    lapse_age: np.ndarray
    frustration: np.ndarray
    sorted_out: np.ndarray  # wrote to support about their failed payment
    current_plan: np.ndarray
    # Charges that failed, by the day of their next retry: customer → attempt (1 or 2).
    retries: dict[int, list[tuple[np.ndarray, int]]] = field(default_factory=dict)


def _population(spec: WorldSpec, rng: np.random.Generator, dyn: Dynamics) -> _Population:
    n, days = spec.customers, spec.days
    # Static attributes. 70 % joined before the window, the rest join during it.
    existing = rng.random(n) < 0.7
    signup_day = np.where(existing, -rng.integers(1, 730, n), rng.integers(0, days, n)).astype(
        np.int64
    )
    plan = rng.choice(3, n, p=[0.45, 0.38, 0.17])
    region = rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15])
    device = rng.choice(5, n, p=[0.4, 0.3, 0.15, 0.08, 0.07])
    age = rng.integers(18, 76, n)
    # How much they like to watch (premium subscribers a little more).
    taste = rng.lognormal(0.0, dyn.taste_spread, n) * (1.0 + 0.15 * plan)
    payment_risk = rng.beta(1.0, 25.0, n)
    satisfaction = rng.normal(0.0, 1.0, n)
    # How often the faulty release crashes on this customer's TV or console (models differ).
    crashiness = np.where(
        FAULTY_DEVICES[device] & (rng.random(n) < dyn.broken_share),
        dyn.crash_rate,
        dyn.minor_crash_rate,
    )
    mood = rng.normal(0.0, 1.0, n)
    return _Population(
        signup_day=signup_day,
        plan=plan,
        region=region,
        device=device,
        age=age,
        taste=taste,
        payment_risk=payment_risk,
        satisfaction=satisfaction,
        crashiness=crashiness,
        mood=mood,
        churn_day=np.full(n, np.iinfo(np.int64).max, dtype=np.int64),
        lapsing=np.zeros(n, dtype=bool),
        lapse_age=np.zeros(n, dtype=np.int64),
        frustration=np.zeros(n),
        sorted_out=np.zeros(n, dtype=bool),
        current_plan=plan.copy(),
    )


@dataclass
class _Parts:
    """The event rows of simulated days, as column arrays per day and kind."""

    usage: list[dict[str, np.ndarray]] = field(default_factory=list)
    billing: list[dict[str, np.ndarray]] = field(default_factory=list)
    tickets: list[dict[str, np.ndarray]] = field(default_factory=list)


def _simulate_day(
    spec: WorldSpec,
    dyn: Dynamics,
    pop: _Population,
    day: int,
    rng: np.random.Generator,
    minutes: np.ndarray,
    minutes_offset: int,
    parts: _Parts,
) -> None:
    """One day of Pondstream: viewing, crashes, billing, tickets and churn, drawn from `rng`.

    Updates `pop` in place, appends the day's rows to `parts` and its viewing minutes to column
    `day - minutes_offset` of `minutes`."""
    n = spec.customers
    innovation = np.sqrt(1.0 - dyn.satisfaction_persistence**2)
    mood_innovation = np.sqrt(1.0 - dyn.mood_persistence**2)
    signup_day, churn_day, device = pop.signup_day, pop.churn_day, pop.device
    satisfaction, mood, taste = pop.satisfaction, pop.mood, pop.taste
    lapsing, lapse_age, frustration = pop.lapsing, pop.lapse_age, pop.frustration
    sorted_out, current_plan, retries = pop.sorted_out, pop.current_plan, pop.retries

    def billing(customers: np.ndarray, day: int, kind: str | np.ndarray) -> None:
        parts.billing.append(
            {
                "customer_id": customers + 1,
                "day": np.full(customers.size, day),
                "seconds": rng.integers(0, 86_400, customers.size),
                "event_type": np.broadcast_to(np.asarray(kind), customers.shape).astype(object),
                "amount": PLAN_PRICE[current_plan[customers]],
                "plan": PLANS[current_plan[customers]],
            }
        )

    shifted = day >= spec.shift_day
    active = (signup_day <= day) & (churn_day > day)
    idx = np.flatnonzero(active)
    weekday = (spec.start_date + dt.timedelta(days=day)).weekday()
    weekend = 1.25 if weekday >= 5 else 1.0

    satisfaction[idx] = dyn.satisfaction_persistence * satisfaction[idx] + innovation * (
        rng.normal(0.0, 1.0, idx.size)
    )
    mood[idx] = dyn.mood_persistence * mood[idx] + mood_innovation * rng.normal(0.0, 1.0, idx.size)
    # Disengagement: unhappy customers with little taste for the catalogue start to lapse.
    start_p = _sigmoid(
        dyn.lapse_base
        - dyn.lapse_satisfaction * satisfaction[idx]
        - dyn.lapse_taste * np.log(taste[idx])
    )
    was = lapsing[idx]
    lapsing[idx] = np.where(
        was, rng.random(idx.size) >= dyn.lapse_recover, rng.random(idx.size) < start_p
    )
    lapse_age[idx] = np.where(lapsing[idx], lapse_age[idx] + 1, 0)

    intensity = taste[idx] * np.exp(dyn.viewing_satisfaction * satisfaction[idx]) * weekend
    intensity = np.where(lapsing[idx], dyn.lapse_viewing * intensity, intensity)
    sessions = rng.poisson(intensity)
    used_device = np.where(rng.random(idx.size) < 0.8, device[idx], rng.integers(0, 5, idx.size))
    if shifted:  # the customer's own TV or console model, or another faulty device
        own = used_device == device[idx]
        crash_p = np.where(
            FAULTY_DEVICES[used_device],
            np.where(own, pop.crashiness[idx], dyn.minor_crash_rate),
            0.0,
        )
    else:
        crash_p = np.zeros(idx.size)
    crashes = rng.binomial(sessions, crash_p)
    benign = rng.binomial(sessions - crashes, dyn.benign_error_rate)
    errors = crashes + benign
    session_minutes = dyn.session_minutes * np.exp(
        dyn.viewing_mood * mood[idx] - dyn.viewing_mood**2 / 2
    )
    watched = np.where(
        sessions > 0,
        rng.gamma(
            np.maximum(dyn.session_shape * sessions, 1e-9), session_minutes / dyn.session_shape
        ),
        0.0,
    )
    # A crashed session ends early: it keeps `crash_minutes` of its viewing.
    watched *= 1.0 - (1.0 - dyn.crash_minutes) * crashes / np.maximum(sessions, 1)
    if day >= 0:
        minutes[idx, day - minutes_offset] = watched
    frustration[idx] = dyn.frustration_decay * frustration[idx] + crashes

    has_usage = (sessions > 0) & (day >= 0)
    u = idx[has_usage]
    parts.usage.append(
        {
            "customer_id": u + 1,
            "day": np.full(u.size, day),
            "seconds": rng.integers(0, 86_400, u.size),
            "device": used_device[has_usage],
            "sessions": sessions[has_usage],
            "minutes_watched": np.round(watched[has_usage], 1),
            "errors": errors[has_usage],
        }
    )

    # Billing: a charge every 30 days from signup; a failed one is retried after 3 and 7
    # days, and if the last retry fails too the subscription may end (involuntary churn).
    ended = np.zeros(n, dtype=bool)
    due = idx[(day - signup_day[idx]) % 30 == 0]
    failed = rng.random(due.size) < pop.payment_risk[due]
    billing(due, day, np.where(failed, "payment_failed", "payment"))
    first_fail = due[failed]
    sorted_out[first_fail] = False
    retries.setdefault(day + 3, []).append((first_fail, 1))
    for customers, attempt in retries.pop(day, []):
        customers = customers[churn_day[customers] > day]
        if not customers.size:
            continue
        ok = rng.random(customers.size) < dyn.retry_success[attempt - 1]
        billing(customers, day, np.where(ok, "payment", "payment_failed"))
        if attempt == 1:
            retries.setdefault(day + 4, []).append((customers[~ok], 2))
        else:
            lost = customers[~ok & ~sorted_out[customers]]
            ended[lost[rng.random(lost.size) < dyn.involuntary_churn]] = True
    movers = idx[rng.random(idx.size) < 0.001]
    if movers.size:
        current_plan[movers] = np.clip(
            current_plan[movers] + rng.choice([-1, 1], movers.size), 0, 2
        )
        billing(movers, day, "plan_change")

    # Support tickets follow errors and payment failures.
    ticket_p = 0.002 + 0.03 * errors + 0.2 * np.isin(idx, first_fail)
    opened = rng.random(idx.size) < ticket_p
    t = idx[opened]
    category = np.where(
        errors[opened] > 0, 0, np.where(np.isin(t, first_fail), 1, rng.integers(2, 4, t.size))
    )
    sorted_out[t[category == 1]] = True  # support updates the card: the subscription stays
    hours = np.round(rng.gamma(2.0, 6.0, t.size), 1)
    parts.tickets.append(
        {
            "customer_id": t + 1,
            "day": np.full(t.size, day),
            "seconds": rng.integers(0, 86_400, t.size),
            "category": TICKET_CATEGORIES[category],
            "priority": np.where(rng.random(t.size) < 0.2, "high", "normal"),
            "resolution_hours": hours,
        }
    )

    # Churn: lapsing customers cancel; crashes drive customers away; a failed last retry
    # ends a subscription; and a few leave for reasons nobody sees.
    quit_p = (
        np.where(lapse_age[idx] > dyn.lapse_min_days, dyn.lapse_cancel, 0.0)
        + _sigmoid(dyn.crash_churn_base + dyn.crash_churn_slope * frustration[idx])
        - _sigmoid(dyn.crash_churn_base)
        + dyn.background_churn
    )
    churns = (rng.random(idx.size) < quit_p) | ended[idx]
    churn_day[idx[churns]] = day


@dataclass
class _Carry:
    """What a generated world hands on to the days added to it: the population, the last
    `label_horizon_days` of viewing (for the labels still to come), the billing corrections
    created after the last day, and the next ticket and billing event numbers."""

    population: _Population
    minutes_tail: np.ndarray
    pending_billing: pd.DataFrame
    next_ticket: int
    next_billing: int


def _simulate(
    spec: WorldSpec, progress: Callable[[str], None], dynamics: Dynamics = DYNAMICS
) -> tuple[dict[str, pd.DataFrame], _Carry]:
    rng = np.random.default_rng(spec.seed)
    days, dyn = spec.days, dynamics
    pop = _population(spec, rng, dyn)
    minutes = np.zeros((spec.customers, days), dtype=np.float32)
    parts = _Parts()

    # The simulation starts `warmup_days` before the window, so lapses, frustration and billing
    # cycles are under way on day 0; billing and support events of those days are kept (every
    # 30-day window is whole), viewing and labels start on day 0.
    for day in range(-spec.warmup_days, days):
        if day >= 0 and day % 20 == 0:
            progress(f"simulating day {day + 1}/{days}")
        _simulate_day(spec, dyn, pop, day, rng, minutes, 0, parts)

    progress("assembling tables")
    frames: dict[str, pd.DataFrame] = {}
    frames["customers"] = _customers_frame(
        spec, pop.signup_day, pop.plan, pop.region, pop.device, pop.age
    )
    frames["usage_events"] = _events_frame(spec, parts.usage, rng, "usage")
    frames["billing_events"], pending, next_billing = _billing_frame(spec, parts.billing, rng)
    frames["support_tickets"] = _events_frame(spec, parts.tickets, rng, "ticket")
    frames["churn_labels"] = _labels_frame(spec, pop.signup_day, pop.churn_day, minutes)
    carry = _Carry(
        population=pop,
        minutes_tail=minutes[:, max(0, days - spec.label_horizon_days) :].copy(),
        pending_billing=pending,
        next_ticket=len(frames["support_tickets"]) + 1,
        next_billing=next_billing,
    )
    return frames, carry


def _customers_frame(spec, signup_day, plan, region, device, age) -> pd.DataFrame:
    signup = _timestamps(spec, signup_day, np.zeros_like(signup_day))
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, signup_day.size + 1),
            "signup_date": pd.to_datetime(signup).date,
            "plan": PLANS[plan],
            "region": REGIONS[region],
            "primary_device": DEVICES[device],
            "age": age,
        }
    )


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _events_frame(spec, parts, rng, kind: str, first_id: int = 1) -> pd.DataFrame:
    data = _concat(parts)
    ts = _timestamps(spec, data.pop("day"), data.pop("seconds"))
    lag = rng.integers(30, 3_600, ts.size).astype("timedelta64[s]")
    frame = pd.DataFrame({"customer_id": data.pop("customer_id")})
    frame["event_timestamp"] = pd.to_datetime(ts).tz_localize("UTC")
    frame["created_timestamp"] = pd.to_datetime(ts + lag).tz_localize("UTC")
    if kind == "usage":
        frame["device"] = DEVICES[data.pop("device")]
    for key, values in data.items():
        frame[key] = values
    if kind == "ticket":
        frame.insert(0, "ticket_id", [f"T-{i:07d}" for i in range(first_id, first_id + len(frame))])
    return frame.sort_values(["event_timestamp", "customer_id"], kind="stable").reset_index(
        drop=True
    )


def _billing_frame(
    spec: WorldSpec, parts, rng, first_id: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Billing events with their late corrections; also the corrections created after the last
    day (they arrive with days added later) and the next event number."""
    frame = _events_frame(spec, parts, rng, "billing")
    next_id = first_id + len(frame)
    frame.insert(0, "event_id", [f"B-{i:08d}" for i in range(first_id, next_id)])
    # Late corrections: the same event (same timestamp) restated days later with another outcome.
    pick = np.flatnonzero(
        (rng.random(len(frame)) < 0.02) & frame["event_type"].str.startswith("payment").to_numpy()
    )
    corrections = frame.iloc[pick].copy()
    corrections["created_timestamp"] = corrections["created_timestamp"] + pd.to_timedelta(
        rng.integers(1, 4, len(corrections)), unit="D"
    )
    corrections["event_type"] = np.where(
        corrections["event_type"] == "payment", "payment_failed", "payment"
    )
    corrections, pending = _known_by(spec, corrections)
    return _sorted_billing(pd.concat([frame, corrections], ignore_index=True)), pending, next_id


def _known_by(spec: WorldSpec, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows created by the end of the world's last day, and those created after it."""
    end = pd.Timestamp(spec.end_date + dt.timedelta(days=1), tz="UTC")
    known = rows["created_timestamp"] < end
    return rows[known], rows[~known].reset_index(drop=True)


def _sorted_billing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(
        ["event_timestamp", "event_id", "created_timestamp"], kind="stable"
    ).reset_index(drop=True)


def _labels_frame(
    spec: WorldSpec,
    signup_day,
    churn_day,
    minutes,
    first_day: int = 0,
    minutes_offset: int = 0,
) -> pd.DataFrame:
    """Labels of days `first_day` … the last whose horizon has passed; column c of `minutes` is
    day `c + minutes_offset`'s viewing."""
    horizon = spec.label_horizon_days
    last_known = spec.days - 1 - horizon
    cumulative = np.concatenate(
        [np.zeros((minutes.shape[0], 1)), np.cumsum(minutes, axis=1)], axis=1
    )
    parts = []
    for day in range(first_day, last_known + 1):
        idx = np.flatnonzero((signup_day < day) & (churn_day >= day))
        churned = churn_day[idx] < day + horizon
        future_minutes = (
            cumulative[idx, day + horizon - minutes_offset] - cumulative[idx, day - minutes_offset]
        )
        parts.append(
            {
                "customer_id": idx + 1,
                "day": np.full(idx.size, day),
                "churned_14d": churned.astype(np.int8),
                "minutes_next_14d": np.round(future_minutes, 1),
            }
        )
    if not parts:
        parts = [
            {
                "customer_id": np.zeros(0, np.int64),
                "day": np.zeros(0, np.int64),
                "churned_14d": np.zeros(0, np.int8),
                "minutes_next_14d": np.zeros(0),
            }
        ]
    data = _concat(parts)
    label_day = data.pop("day")
    frame = pd.DataFrame({"customer_id": data["customer_id"]})
    frame["label_timestamp"] = pd.to_datetime(
        _timestamps(spec, label_day, np.zeros_like(label_day))
    ).tz_localize("UTC")
    frame["known_at"] = frame["label_timestamp"] + pd.Timedelta(days=horizon)
    frame["churned_14d"] = data["churned_14d"]
    frame["minutes_next_14d"] = data["minutes_next_14d"]
    return frame


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _traces_frame(spec: WorldSpec) -> pd.DataFrame:
    """Production assistant traces; from `trace_regression_day` a prompt that ignores context."""
    from mallard.traces.schema import CALL_SPAN_ID, trace_schema

    rng = np.random.default_rng(spec.seed + 1)
    articles = {a["article_id"]: a for a in _read_jsonl(HELPCENTRE_DIR / "articles.jsonl")}
    questions = {q["question_id"]: q for q in _read_jsonl(HELPCENTRE_DIR / "questions.jsonl")}
    seeds = _read_jsonl(HELPCENTRE_DIR / "trace_seeds.jsonl")
    article_ids = sorted(articles)
    first_day = spec.days - spec.trace_days
    rows = []
    for trace_day in range(spec.trace_days):
        regressed = trace_day >= spec.trace_regression_day
        count = rng.poisson(spec.traces_per_day)
        for _ in range(count):
            seed = seeds[rng.integers(len(seeds))]
            question = questions[seed["question_id"]]
            asked = seed["paraphrases"][rng.integers(len(seed["paraphrases"]))]
            others = [
                a for a in rng.choice(article_ids, 3, replace=False) if a != question["article_id"]
            ]
            retrieved = [question["article_id"], *others[:2]]
            if rng.random() < 0.15:
                retrieved = [*others[:2], question["article_id"]]
            context = "\n\n".join(
                f"[{a}] {articles[a]['title']}\n{articles[a]['body']}" for a in retrieved
            )
            fallback = rng.random() < 0.12
            model = "qwen2.5-coder-1.5b-instruct" if fallback else "gpt-4o-mini"
            failed = rng.random() < 0.015
            output = "" if failed else seed["ungrounded_answer" if regressed else "grounded_answer"]
            prompt_tokens = int(1.3 * (len(context.split()) + len(asked.split())) + 180)
            completion_tokens = int(1.3 * len(output.split()))
            cost = 0.0 if fallback else (prompt_tokens * 0.15 + completion_tokens * 0.60) / 1e6
            when = spec.day_start(first_day + trace_day) + pd.Timedelta(
                seconds=int(rng.integers(0, 86_400))
            )
            rows.append(
                {
                    "trace_id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                    "span_id": CALL_SPAN_ID,  # each call is a one-span trace
                    "parent_span_id": "",
                    "span_kind": "llm",
                    "span_name": "",
                    "provider": "",
                    "timestamp": when,
                    "endpoint": "qwen-1.5b-local" if fallback else "openai-gpt-4o-mini",
                    "model": model,
                    "prompt_name": "support_assistant",
                    "prompt_version": 2 if regressed else 1,
                    "user_id": f"cust-{int(rng.integers(1, spec.customers + 1))}",
                    "session_id": f"s-{int(rng.integers(1, 10**9)):09d}",
                    "run_id": "",
                    "input": asked,
                    "output": output,
                    "retrieved_ids": retrieved,
                    "retrieved_text": context,
                    "latency_ms": 0.0 if failed else float(np.round(rng.lognormal(7.0, 0.35), 1)),
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "cost_usd": cost,
                    "status": "error" if failed else "ok",
                    "error": "APITimeoutError: request timed out after 30 s" if failed else "",
                    "cache": "miss",
                    "attributes": json.dumps(
                        {"question_id": question["question_id"], "category": question["category"]}
                    ),
                }
            )
    frame = pd.DataFrame(rows).sort_values("timestamp", kind="stable").reset_index(drop=True)
    return pa.Table.from_pandas(frame, schema=trace_schema(), preserve_index=False).to_pandas()


def shift_statistics(
    spec: WorldSpec, frames: dict[str, pd.DataFrame]
) -> dict[str, dict[str, float]]:
    """Before/after statistics that make the day-`shift_day` shift visible in the data."""
    shift_at = spec.day_start(spec.shift_day)
    usage = frames["usage_events"]
    before = usage[usage["event_timestamp"] < shift_at]
    after = usage[usage["event_timestamp"] >= shift_at]
    labels = frames["churn_labels"]
    lb = labels[labels["label_timestamp"] < shift_at]
    la = labels[labels["label_timestamp"] >= shift_at]

    def side(u: pd.DataFrame, lab: pd.DataFrame) -> dict[str, float]:
        return {
            "minutes_per_session": float(u["minutes_watched"].sum() / max(u["sessions"].sum(), 1)),
            "errors_per_session": float(u["errors"].sum() / max(u["sessions"].sum(), 1)),
            "mean_minutes_watched": float(u["minutes_watched"].mean()) if len(u) else 0.0,
            "churn_rate_14d": float(lab["churned_14d"].mean()) if len(lab) else 0.0,
        }

    return {"before_shift": side(before, lb), "after_shift": side(after, la)}


def _write(frames: dict[str, pd.DataFrame], traces: pd.DataFrame, target: Path) -> dict[str, str]:
    from deltalake import write_deltalake

    target.mkdir(parents=True)
    files = {
        "customers": "customers.csv",
        "usage_events": "usage_events.parquet",
        "billing_events": "billing_events",
        "support_tickets": "support_tickets.parquet",
        "churn_labels": "churn_labels.parquet",
        "traces": "traces.parquet",
    }
    frames["customers"].to_csv(target / files["customers"], index=False)
    for name in ("usage_events", "support_tickets", "churn_labels"):
        pq.write_table(
            pa.Table.from_pandas(frames[name], preserve_index=False), target / files[name]
        )
    pq.write_table(pa.Table.from_pandas(traces, preserve_index=False), target / files["traces"])
    write_deltalake(
        target / files["billing_events"],
        pa.Table.from_pandas(frames["billing_events"], preserve_index=False),
        mode="overwrite",
    )
    helpcentre = target / "helpcentre"
    helpcentre.mkdir()
    for name, source in (
        ("articles.jsonl", "articles.jsonl"),
        ("eval_questions.jsonl", "questions.jsonl"),
        ("calibration.jsonl", "calibration.jsonl"),
    ):
        shutil.copyfile(HELPCENTRE_DIR / source, helpcentre / name)
        files[name.removesuffix(".jsonl")] = f"helpcentre/{name}"
    return files


SIMULATION_DIR = "simulation"
"""Inside a world's folder: the state days are added from (`extend_world`)."""


def _save_carry(carry: _Carry, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pop = carry.population
    arrays = {f.name: getattr(pop, f.name) for f in fields(_Population) if f.name != "retries"}
    np.savez(folder / "population.npz", minutes_tail=carry.minutes_tail, **arrays)
    pq.write_table(
        pa.Table.from_pandas(carry.pending_billing, preserve_index=False),
        folder / "pending_billing.parquet",
    )
    state = {
        "next_ticket": carry.next_ticket,
        "next_billing": carry.next_billing,
        "retries": [
            [day, attempt, customers.tolist()]
            for day, entries in sorted(pop.retries.items())
            for customers, attempt in entries
        ],
    }
    (folder / "state.json").write_text(json.dumps(state) + "\n")


def _load_carry(folder: Path) -> _Carry:
    with np.load(folder / "population.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    state = json.loads((folder / "state.json").read_text())
    retries: dict[int, list[tuple[np.ndarray, int]]] = {}
    for day, attempt, customers in state["retries"]:
        retries.setdefault(int(day), []).append((np.asarray(customers, dtype=np.int64), attempt))
    minutes_tail = arrays.pop("minutes_tail")
    return _Carry(
        population=_Population(**arrays, retries=retries),
        minutes_tail=minutes_tail,
        pending_billing=pq.read_table(folder / "pending_billing.parquet").to_pandas(),
        next_ticket=int(state["next_ticket"]),
        next_billing=int(state["next_billing"]),
    )


def _summary(
    spec: WorldSpec, files: dict[str, str], frames: dict[str, pd.DataFrame], traces: int
) -> WorldSummary:
    return WorldSummary(
        spec={k: str(v) if isinstance(v, dt.date) else v for k, v in asdict(spec).items()},
        files=files,
        rows={**{k: len(v) for k, v in frames.items()}, "traces": traces},
        shift=shift_statistics(spec, frames),
    )


def _replace(target: Path, staging: Path) -> None:
    """Put the staged world in `target`'s place, the old one removed only once it is in."""
    if target.exists():
        retired = target.with_name(f".{target.name}.retired-{uuid.uuid4().hex[:8]}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)


def generate_world(
    spec: WorldSpec, target: Path, progress: Callable[[str], None] = lambda _msg: None
) -> WorldSummary:
    """Generate the world into `target`, replacing an earlier one only once the new one is whole."""
    target = Path(target)
    frames, carry = _simulate(spec, progress)
    progress("writing production traces")
    traces = _traces_frame(spec)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        files = _write(frames, traces, staging)
        _save_carry(carry, staging / SIMULATION_DIR)
        summary = _summary(spec, files, frames, len(traces))
        (staging / "world.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
        _replace(target, staging)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary


class WorldNotExtensible(RuntimeError):
    """The folder holds no world that days can be added to."""


def read_spec(target: Path) -> WorldSpec:
    """The spec of the world generated (and extended) in `target`."""
    manifest = Path(target) / "world.json"
    if not manifest.exists():
        raise WorldNotExtensible(f"no sample world in {target}: run `mallard demo-data` first")
    spec = dict(json.loads(manifest.read_text())["spec"])
    spec["end_date"] = dt.date.fromisoformat(spec["end_date"])
    return WorldSpec(**spec)


def extend_world(
    target: Path, days: int, progress: Callable[[str], None] = lambda _msg: None
) -> WorldSummary:
    """Add `days` days after the last day of the world in `target`, keeping its start date and
    every row it holds: the new rows are those of the new days, the labels whose horizon has now
    passed and the late corrections created on the new days.

    Each added day is drawn from its own stream (seed, day), so adding two days at once or one at
    a time gives the same world. Nobody signs up on an added day, and the production traces stay
    those of the generated world's last `trace_days` days."""
    target = Path(target)
    if days < 1:
        raise ValueError(f"days={days}: add at least one day")
    spec = read_spec(target)
    if not (target / SIMULATION_DIR / "state.json").exists():
        raise WorldNotExtensible(
            f"the world in {target} was generated without its simulation state (an older "
            "Mallard): regenerate it with `mallard demo-data`"
        )
    carry = _load_carry(target / SIMULATION_DIR)
    grown = replace(spec, end_date=spec.end_date + dt.timedelta(days=days), days=spec.days + days)
    pop, horizon = carry.population, spec.label_horizon_days
    minutes_offset = spec.days - carry.minutes_tail.shape[1]
    minutes = np.concatenate(
        [carry.minutes_tail, np.zeros((spec.customers, days), dtype=np.float32)], axis=1
    )
    new: dict[str, list[pd.DataFrame]] = {"usage_events": [], "billing_events": []}
    new["support_tickets"] = []
    pending = [carry.pending_billing]
    next_ticket, next_billing = carry.next_ticket, carry.next_billing
    for day in range(spec.days, grown.days):
        progress(f"simulating day {day + 1}/{grown.days} ({grown.start_date + dt.timedelta(day)})")
        parts = _Parts()
        rng = np.random.default_rng([spec.seed, day])
        _simulate_day(grown, DYNAMICS, pop, day, rng, minutes, minutes_offset, parts)
        post = np.random.default_rng([spec.seed, day, 1])
        new["usage_events"].append(_events_frame(grown, parts.usage, post, "usage"))
        billing, late, next_billing = _billing_frame(grown, parts.billing, post, next_billing)
        new["billing_events"].append(billing)
        pending.append(late)
        tickets = _events_frame(grown, parts.tickets, post, "ticket", first_id=next_ticket)
        next_ticket += len(tickets)
        new["support_tickets"].append(tickets)
    arrived, still_pending = _known_by(grown, pd.concat(pending, ignore_index=True))
    new["billing_events"].append(arrived)
    added = {name: pd.concat(frames, ignore_index=True) for name, frames in new.items()}
    added["billing_events"] = _sorted_billing(added["billing_events"])
    added["churn_labels"] = _labels_frame(
        grown, pop.signup_day, pop.churn_day, minutes, max(0, spec.days - horizon), minutes_offset
    )
    carry = _Carry(
        population=pop,
        minutes_tail=minutes[:, -min(horizon, minutes.shape[1]) :].copy(),
        pending_billing=still_pending,
        next_ticket=next_ticket,
        next_billing=next_billing,
    )

    progress("writing the new days")
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(target, staging)
        manifest = json.loads((staging / "world.json").read_text())
        files, tables = manifest["files"], {}
        for name in ("usage_events", "support_tickets", "churn_labels"):
            path = staging / files[name]
            old = pq.read_table(path)
            tables[name] = pa.concat_tables(
                [old, pa.Table.from_pandas(added[name], schema=old.schema, preserve_index=False)]
            )
            pq.write_table(tables[name], path)
        _append_delta(staging / files["billing_events"], added["billing_events"])
        _save_carry(carry, staging / SIMULATION_DIR)
        shift = shift_statistics(
            grown, {name: tables[name].to_pandas() for name in ("usage_events", "churn_labels")}
        )
        summary = WorldSummary(
            spec={k: str(v) if isinstance(v, dt.date) else v for k, v in asdict(grown).items()},
            files=files,
            rows={
                name: count + len(added.get(name, ())) for name, count in manifest["rows"].items()
            },
            shift=shift,
            extensions=[
                *manifest.get("extensions", []),
                {"from_end_date": spec.end_date.isoformat(), "added_days": days},
            ],
        )
        (staging / "world.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
        _replace(target, staging)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary


def _append_delta(path: Path, rows: pd.DataFrame) -> None:
    from deltalake import DeltaTable, write_deltalake

    schema = pa.schema(DeltaTable(str(path)).schema().to_arrow())
    write_deltalake(
        path, pa.Table.from_pandas(rows, schema=schema, preserve_index=False), mode="append"
    )
