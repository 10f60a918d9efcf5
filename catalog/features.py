"""The sample world's entities, feature views and feature services."""

import datetime as dt

from catalog.sources import billing_events, churn_labels, support_tickets, usage_events
from mallard.features.specs import (
    Entity,
    Expectation,
    Feature,
    FeatureRegistry,
    FeatureService,
    FeatureView,
    TrainingSetSpec,
)

customer = Entity(
    name="customer", join_keys={"customer_id": "int64"}, description="A Pondstream subscriber."
)

usage_7d = FeatureView(
    name="usage_7d",
    entities=[customer],
    sources=[usage_events],
    description="Viewing over the 7 days before the end of each day.",
    owner="playback@pondstream.example",
    ttl=dt.timedelta(days=2),
    sql="""
        SELECT customer_id,
               $partition_end AS event_timestamp,
               max(created_timestamp) AS created_timestamp,
               sum(minutes_watched) AS minutes_7d,
               sum(sessions) AS sessions_7d,
               sum(errors) AS errors_7d,
               count(DISTINCT CAST(event_timestamp AS DATE)) AS active_days_7d,
               sum(errors) / nullif(sum(sessions), 0) AS error_rate_7d
        FROM usage_events
        WHERE event_timestamp >= $partition_end - INTERVAL 7 DAY
          AND event_timestamp < $partition_end
        GROUP BY customer_id
    """,
    features=[
        Feature("minutes_7d", "float64", "minutes watched", Expectation(not_null=True, min=0)),
        Feature("sessions_7d", "int64", "viewing sessions", Expectation(min=0)),
        Feature("errors_7d", "int64", "playback errors", Expectation(min=0)),
        Feature("active_days_7d", "int64", "days with any viewing", Expectation(min=0, max=7)),
        Feature("error_rate_7d", "float64", "errors per session", Expectation(min=0)),
    ],
)

billing_30d = FeatureView(
    name="billing_30d",
    entities=[customer],
    sources=[billing_events],
    description="Payments over the 30 days before the end of each day, latest restatement of "
    "each billing event.",
    owner="billing@pondstream.example",
    ttl=dt.timedelta(days=35),
    sql="""
        WITH latest AS (
            SELECT * FROM billing_events
            WHERE event_timestamp >= $partition_end - INTERVAL 30 DAY
              AND event_timestamp < $partition_end
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY created_timestamp DESC) = 1
        )
        SELECT customer_id,
               $partition_end AS event_timestamp,
               max(created_timestamp) AS created_timestamp,
               count(*) FILTER (WHERE event_type = 'payment_failed') AS payment_failures_30d,
               count(*) FILTER (WHERE event_type = 'payment') AS payments_30d,
               count(*) FILTER (WHERE event_type = 'plan_change') AS plan_changes_30d,
               arg_max(plan, event_timestamp) AS current_plan,
               arg_max(amount, event_timestamp) AS monthly_price
        FROM latest
        GROUP BY customer_id
    """,
    features=[
        Feature("payment_failures_30d", "int64", "failed payments", Expectation(min=0)),
        Feature("payments_30d", "int64", "successful payments", Expectation(min=0)),
        Feature("plan_changes_30d", "int64", "plan changes", Expectation(min=0)),
        Feature(
            "current_plan",
            "string",
            "plan of the latest billing event",
            Expectation(not_null=True, allowed=("basic", "standard", "premium")),
        ),
        Feature("monthly_price", "float64", "price of the current plan", Expectation(min=0)),
    ],
)

support_30d = FeatureView(
    name="support_30d",
    entities=[customer],
    sources=[support_tickets],
    description="Support tickets over the 30 days before the end of each day.",
    owner="support@pondstream.example",
    ttl=dt.timedelta(days=35),
    sql="""
        SELECT customer_id,
               $partition_end AS event_timestamp,
               max(created_timestamp) AS created_timestamp,
               count(*) AS tickets_30d,
               count(*) FILTER (WHERE category = 'playback') AS playback_tickets_30d,
               count(*) FILTER (WHERE priority = 'high') AS high_priority_tickets_30d,
               avg(resolution_hours) AS mean_resolution_hours_30d
        FROM support_tickets
        WHERE event_timestamp >= $partition_end - INTERVAL 30 DAY
          AND event_timestamp < $partition_end
        GROUP BY customer_id
    """,
    features=[
        Feature("tickets_30d", "int64", "tickets opened", Expectation(min=0)),
        Feature("playback_tickets_30d", "int64", "playback tickets", Expectation(min=0)),
        Feature("high_priority_tickets_30d", "int64", "high-priority tickets", Expectation(min=0)),
        Feature(
            "mean_resolution_hours_30d", "float64", "mean hours to resolve", Expectation(min=0)
        ),
    ],
)

churn_features = FeatureService(
    name="churn_features",
    features=["usage_7d:*", "billing_30d:*", "support_30d:*"],
    description="Everything the churn and engagement models consume.",
)

FEATURE_VIEWS = [usage_7d, billing_30d, support_30d]
FEATURE_SERVICES = [churn_features]
REGISTRY = FeatureRegistry(FEATURE_VIEWS, FEATURE_SERVICES)

churn_training_set = TrainingSetSpec(
    name="churn_training_set",
    service="churn_features",
    label_source=churn_labels,
    labels=["churned_14d", "minutes_next_14d"],
    every_n_days=7,
    description="Weekly snapshots of every active customer with churn and viewing labels.",
)

TRAINING_SETS = [churn_training_set]

FEATURE_STORE_OWNER = "data-platform@pondstream.example"
"""Who owns the online store and the training sets (the views have their own owners)."""
