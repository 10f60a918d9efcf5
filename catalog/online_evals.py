"""Online evals of this deployment: reference-free graders on a sample of production traces.

Each online eval is one hourly asset (`online_evals/<name>`) and one job; the `online_evals`
sensor grades new traces as they arrive (docs/ONLINE_EVALS.md). Graders are named from
catalog/graders.py, from the reference-free graders below, or registered with `@grader`.
"""

import datetime as dt

from catalog.graders import GRADERS
from mallard.evals.graders.reference_free import AnswerRelevance, JsonValid, Length, NoLeak, Refusal
from mallard.evals.online import OnlineEval, OnlineEvalCatalog
from mallard.evals.online_alerts import QualityAlertRule
from mallard.evals.online_budgets import SpendBudget

answer_relevance = AnswerRelevance(
    threshold=0.3,
    description="MiniLM cosine between the customer's question and the answer.",
)
refusal = Refusal(description="The assistant answers instead of refusing or apologising.")
no_leak = NoLeak(
    allowed_domains=("pondstream.com", "pondstream.example"),
    description="No e-mail, phone, card, IBAN or SSN the customer and the articles did not give "
    "(Pondstream's own addresses allowed), and no API key, token or private key.",
)
json_valid = JsonValid(description="The answer is a JSON object (for JSON-answering prompts).")
answer_length = Length(
    "answer_length",
    min_length=5,
    max_length=120,
    description="Between 5 and 120 words: neither a stub nor an essay.",
)

ONLINE_GRADERS = [answer_relevance, refusal, no_leak, json_valid, answer_length]

support_assistant_live = OnlineEval(
    name="support_assistant_live",
    prompt="support_assistant",
    graders=("grounding", "answer_relevance", "refusal", "no_leak", "answer_length"),
    sampling_rate=0.5,
    delay=dt.timedelta(minutes=2),
    batch_size=500,
    shadow_label="shadow",
    shadow_traces=120,
    shadow_endpoints=("openai-gpt-4o-mini",),
    # MiniLM relevance is shown, not deciding: on the sample world's traffic the regressed
    # prompt's fluent made-up answers sit 0.06 closer to the question than the grounded ones,
    # so it would veto the fix it cannot see (docs/ONLINE_EVALS.md, "The shadow asset").
    shadow_graders=("grounding", "refusal", "no_leak", "answer_length"),
    description="Every other production answer of the support assistant (any version, any "
    "endpoint), two minutes after its last span: grounded in the retrieved articles, on the "
    "question, not a refusal, no leak, a sensible length. The version labelled `shadow` is "
    "replayed on the 120 newest graded traces the hosted model answered "
    "(shadow_comparison/support_assistant_live_shadow).",
)

ONLINE_EVALS = [support_assistant_live]
ONLINE_CATALOG = OnlineEvalCatalog(ONLINE_EVALS, [*GRADERS, *ONLINE_GRADERS])

grounding_drop = QualityAlertRule(
    name="grounding_drop",
    metric="pass_rate_drop",
    threshold=0.2,
    eval_name="support_assistant_live",
    grader="grounding",
    window=dt.timedelta(days=1),
    min_count=20,
    description="The support assistant's grounding pass rate fell by more than 20 points "
    "against the day before.",
)
grounding_median = QualityAlertRule(
    name="grounding_median_low",
    metric="median_score",
    threshold=0.6,
    eval_name="support_assistant_live",
    grader="grounding",
    window=dt.timedelta(days=1),
    min_count=20,
    description="Half the support assistant's answers of a prompt version ground under 60 %.",
)
error_rate_high = QualityAlertRule(
    name="error_rate_high",
    metric="error_rate",
    threshold=0.05,
    window=dt.timedelta(hours=6),
    min_count=20,
    severity="critical",
    description="More than 5 % of an endpoint's production calls failed over six hours.",
)

latency_p95_high = QualityAlertRule(
    name="latency_p95_high",
    metric="latency_p95",
    threshold=3000,
    window=dt.timedelta(hours=6),
    min_count=20,
    description="An endpoint's successful production calls took over 3 s at p95 over six hours.",
)
cost_per_user_daily = QualityAlertRule(
    name="cost_per_user_daily",
    metric="cost_per_user",
    threshold=0.01,
    window=dt.timedelta(days=1),
    min_count=1,
    description="A user's production calls cost more than $0.01 in a day (about 50 times the "
    "sample world's typical user).",
)

ALERT_RULES = [
    grounding_drop,
    grounding_median,
    error_rate_high,
    latency_p95_high,
    cost_per_user_daily,
]

user_daily_budget = SpendBudget(
    name="user_daily",
    period="day",
    limit_usd=0.005,
    description="A user's production spend in a UTC day: alerts at 80 % and 100 % of $0.005 "
    "(25 times the sample world's typical user).",
)
user_monthly_budget = SpendBudget(
    name="user_monthly",
    period="month",
    limit_usd=0.05,
    description="A user's production spend in a UTC month: alerts at 80 % and 100 % of $0.05.",
)

BUDGETS = [user_daily_budget, user_monthly_budget]
