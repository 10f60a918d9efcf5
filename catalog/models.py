"""The sample world's models: a churn classifier, a viewing-minutes regression, customer segments.

Each declaration grows the `training` asset group by five assets (candidate, training
statistics, evaluation, champion, explanations). Budgets are small on purpose: `make demo`
trains all three on two cores in a couple of minutes.
"""

from catalog.features import REGISTRY, TRAINING_SETS
from mallard.models.specs import (
    DecisionThreshold,
    ModelCatalog,
    ModelSpec,
    NaiveBaseline,
    Preprocessing,
    PromotionRule,
    TrainingWindow,
)

# Null features mean "no activity in the window": a zero, not a missing value to average over.
NO_ACTIVITY_IS_ZERO = Preprocessing(numeric_imputation=0)
FEW_TREES = {"n_estimators": 30, "max_depth": 8}

churn_classifier = ModelSpec(
    name="churn_classifier",
    task="classification",
    description="Will the customer churn within the next 14 days?",
    owner="retention@pondstream.example",
    training_set="churn_training_set",
    feature_service="churn_features",
    label="churned_14d",
    metric="auc",
    estimators=["lr", "dt", "lightgbm", "rf"],
    estimator_params={"rf": FEW_TREES, "lightgbm": {"n_estimators": 60}},
    folds=3,
    time_budget=45,
    preprocessing=NO_ACTIVITY_IS_ZERO,
    promotion=PromotionRule(min_improvement=0.005, significance=0.05),
    # The retention team can contact one customer in ten per label window: the threshold flags
    # the top 10 % of scores, and the evaluation reports recall and precision at that budget.
    threshold=DecisionThreshold(rule="contact_budget", budget=0.10),
    # Judged on the latest label day (one weekly snapshot, ~15k rows at demo scale), trained on
    # the two before it that end 14 days earlier (the label horizon: no training outcome window
    # overlaps the judged one). Recent training data is what lets a retrain after the day-60
    # shift learn the new behaviour once enough post-shift labels have arrived.
    window=TrainingWindow(holdout_days=7, gap_days=14, train_days=14, max_train_rows=20_000),
    # The API answers a retention score for an unusual row too, and flags it.
    strictness="warn",
)

minutes_forecast = ModelSpec(
    name="minutes_forecast",
    task="regression",
    description="Minutes the customer will watch over the next 14 days.",
    owner="playback@pondstream.example",
    training_set="churn_training_set",
    feature_service="churn_features",
    label="minutes_next_14d",
    metric="mae",
    estimators=["ridge", "dt", "lightgbm", "rf"],
    # Judged on MAE, so LightGBM minimizes absolute error (viewing is heavy-tailed).
    estimator_params={"rf": FEW_TREES, "lightgbm": {"n_estimators": 60, "objective": "l1"}},
    folds=3,
    time_budget=45,
    preprocessing=NO_ACTIVITY_IS_ZERO,
    promotion=PromotionRule(min_improvement=1.0, significance=0.05),
    # What a model must beat to be worth having: last fortnight's viewing, repeated.
    baseline=NaiveBaseline(
        "minutes_7d", lags_days=(0, 7), description="the customer's minutes of the last 14 days"
    ),
    # Two weekly snapshots judge it, the two before them (ending 14 days earlier) train it: the
    # first week of the world lacks a full 7-day viewing history.
    window=TrainingWindow(holdout_days=14, gap_days=14, train_days=14, max_train_rows=15_000),
    # Capacity planning sums these forecasts: the API refuses a row unlike the training data.
    strictness="reject",
)

customer_segments = ModelSpec(
    name="customer_segments",
    task="clustering",
    description="Behavioural segments of active customers: viewing, reliability and spend.",
    owner="growth@pondstream.example",
    training_set="churn_training_set",
    feature_service="churn_features",
    features=["minutes_7d", "active_days_7d", "error_rate_7d", "monthly_price"],
    metric="silhouette",
    estimators=["kmeans", "hclust", "dbscan"],
    # One k-means run (scikit-learn's default for k-means++) lands in a different local optimum
    # on each refit; the best of ten is the same partition again.
    estimator_params={"kmeans": {"n_init": 10}},
    # Four: on the 20,000-customer world a 3-way split of the training weeks and a refit on the
    # held-out weeks disagree (adjusted Rand 0.32, whatever the restarts); four agree (0.88).
    num_clusters=4,
    time_budget=30,
    # Viewing and error rates are heavy-tailed: a power transform keeps k-means from spending
    # clusters on a few outliers. With ten k-means restarts the day-59 segments' held-out
    # assignment stability is 0.77 at demo scale (0.88 at 1,000 customers); one run gave 0.30.
    preprocessing=Preprocessing(numeric_imputation=0, transformation=True, normalize=True),
    promotion=PromotionRule(min_improvement=0.01, significance=0.05, min_stability=0.5),
    # Segments describe the customers of recent weeks: six weeks train them, three judge them.
    window=TrainingWindow(
        holdout_days=21, train_days=42, max_train_rows=3_000, max_holdout_rows=3_000
    ),
)

MODELS = ModelCatalog(
    [churn_classifier, minutes_forecast, customer_segments],
    registry=REGISTRY,
    training_sets=TRAINING_SETS,
)
