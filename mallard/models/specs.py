"""Model declarations: `ModelSpec` and the pieces it is made of, checked when catalog/ is imported.

A user declares a model in a few lines in `catalog/models.py`; `ModelCatalog` checks every
declaration against the feature registry and the training sets, so a wrong task, a feature the
service does not serve or a time budget of zero fails the code location's load with a message
naming the model and the field.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    from mallard.features.specs import FeatureRegistry, TrainingSetSpec

Task = Literal["classification", "regression", "clustering"]
TASKS: tuple[str, ...] = ("classification", "regression", "clustering")

# Deciding metrics per task: the name a user writes → (PyCaret's leaderboard column, higher is better).
METRICS: dict[str, dict[str, tuple[str, bool]]] = {
    "classification": {
        "auc": ("AUC", True),
        "accuracy": ("Accuracy", True),
        "f1": ("F1", True),
        "recall": ("Recall", True),
        "precision": ("Prec.", True),
    },
    "regression": {
        "mae": ("MAE", False),
        "mse": ("MSE", False),
        "rmse": ("RMSE", False),
        "r2": ("R2", True),
    },
    "clustering": {"silhouette": ("Silhouette", True)},
}

# PyCaret estimator ids per task and the family each belongs to (candidates must span ≥ 3).
ESTIMATORS: dict[str, dict[str, str]] = {
    "classification": {
        "lr": "linear",
        "ridge": "linear",
        "lda": "linear",
        "svm": "linear",
        "dt": "tree",
        "rf": "bagging",
        "et": "bagging",
        "lightgbm": "boosting",
        "gbc": "boosting",
        "ada": "boosting",
        "knn": "neighbors",
        "nb": "bayes",
        "qda": "bayes",
        "mlp": "neural",
        "dummy": "baseline",
    },
    "regression": {
        "lr": "linear",
        "ridge": "linear",
        "lasso": "linear",
        "en": "linear",
        "br": "linear",
        "huber": "linear",
        "dt": "tree",
        "rf": "bagging",
        "et": "bagging",
        "lightgbm": "boosting",
        "gbr": "boosting",
        "ada": "boosting",
        "knn": "neighbors",
        "mlp": "neural",
        "dummy": "baseline",
    },
    "clustering": {
        "kmeans": "centroid",
        "birch": "hierarchical",
        "hclust": "hierarchical",
        "dbscan": "density",
        "optics": "density",
        "meanshift": "density",
        "sc": "spectral",
        "ap": "exemplar",
    },
}
MIN_FAMILIES = 3
IMPUTATIONS = ("mean", "median", "mode", "drop")

# Constructor parameters of the class behind each PyCaret id (PyCaret 3.3, scikit-learn 1.4,
# LightGBM 4), so `estimator_params` is checked when the catalog loads without importing them.
# tests/models/test_specs.py compares this table with the installed classes' signatures.
ESTIMATOR_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "classification": {
        "lr": (
            "LogisticRegression",
            "penalty dual tol C fit_intercept intercept_scaling class_weight random_state "
            "solver max_iter multi_class verbose warm_start n_jobs l1_ratio",
        ),
        "ridge": (
            "RidgeClassifier",
            "alpha fit_intercept copy_X max_iter tol class_weight solver positive random_state",
        ),
        "lda": (
            "LinearDiscriminantAnalysis",
            "solver shrinkage priors n_components store_covariance tol covariance_estimator",
        ),
        "svm": (
            "SGDClassifier",
            "loss penalty alpha l1_ratio fit_intercept max_iter tol shuffle verbose epsilon "
            "n_jobs random_state learning_rate eta0 power_t early_stopping "
            "validation_fraction n_iter_no_change class_weight warm_start average",
        ),
        "dt": (
            "DecisionTreeClassifier",
            "criterion splitter max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features random_state max_leaf_nodes "
            "min_impurity_decrease class_weight ccp_alpha monotonic_cst",
        ),
        "rf": (
            "RandomForestClassifier",
            "n_estimators criterion max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features max_leaf_nodes min_impurity_decrease "
            "bootstrap oob_score n_jobs random_state verbose warm_start class_weight "
            "ccp_alpha max_samples monotonic_cst",
        ),
        "et": (
            "ExtraTreesClassifier",
            "n_estimators criterion max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features max_leaf_nodes min_impurity_decrease "
            "bootstrap oob_score n_jobs random_state verbose warm_start class_weight "
            "ccp_alpha max_samples monotonic_cst",
        ),
        "lightgbm": (
            "LGBMClassifier",
            "boosting_type num_leaves max_depth learning_rate n_estimators subsample_for_bin "
            "objective class_weight min_split_gain min_child_weight min_child_samples "
            "subsample subsample_freq colsample_bytree reg_alpha reg_lambda random_state "
            "n_jobs importance_type",
        ),
        "gbc": (
            "GradientBoostingClassifier",
            "loss learning_rate n_estimators subsample criterion min_samples_split "
            "min_samples_leaf min_weight_fraction_leaf max_depth min_impurity_decrease init "
            "random_state max_features verbose max_leaf_nodes warm_start validation_fraction "
            "n_iter_no_change tol ccp_alpha",
        ),
        "ada": (
            "AdaBoostClassifier",
            "estimator n_estimators learning_rate algorithm random_state",
        ),
        "knn": (
            "KNeighborsClassifier",
            "n_neighbors weights algorithm leaf_size p metric metric_params n_jobs",
        ),
        "nb": (
            "GaussianNB",
            "priors var_smoothing",
        ),
        "qda": (
            "QuadraticDiscriminantAnalysis",
            "priors reg_param store_covariance tol",
        ),
        "mlp": (
            "MLPClassifier",
            "hidden_layer_sizes activation solver alpha batch_size learning_rate "
            "learning_rate_init power_t max_iter shuffle random_state tol verbose warm_start "
            "momentum nesterovs_momentum early_stopping validation_fraction beta_1 beta_2 "
            "epsilon n_iter_no_change max_fun",
        ),
        "dummy": (
            "DummyClassifier",
            "strategy random_state constant",
        ),
    },
    "regression": {
        "lr": (
            "LinearRegression",
            "fit_intercept copy_X n_jobs positive",
        ),
        "ridge": (
            "Ridge",
            "alpha fit_intercept copy_X max_iter tol solver positive random_state",
        ),
        "lasso": (
            "Lasso",
            "alpha fit_intercept precompute copy_X max_iter tol warm_start positive "
            "random_state selection",
        ),
        "en": (
            "ElasticNet",
            "alpha l1_ratio fit_intercept precompute max_iter copy_X tol warm_start positive "
            "random_state selection",
        ),
        "br": (
            "BayesianRidge",
            "max_iter tol alpha_1 alpha_2 lambda_1 lambda_2 alpha_init lambda_init "
            "compute_score fit_intercept copy_X verbose n_iter",
        ),
        "huber": (
            "HuberRegressor",
            "epsilon max_iter alpha warm_start fit_intercept tol",
        ),
        "dt": (
            "DecisionTreeRegressor",
            "criterion splitter max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features random_state max_leaf_nodes "
            "min_impurity_decrease ccp_alpha monotonic_cst",
        ),
        "rf": (
            "RandomForestRegressor",
            "n_estimators criterion max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features max_leaf_nodes min_impurity_decrease "
            "bootstrap oob_score n_jobs random_state verbose warm_start ccp_alpha max_samples "
            "monotonic_cst",
        ),
        "et": (
            "ExtraTreesRegressor",
            "n_estimators criterion max_depth min_samples_split min_samples_leaf "
            "min_weight_fraction_leaf max_features max_leaf_nodes min_impurity_decrease "
            "bootstrap oob_score n_jobs random_state verbose warm_start ccp_alpha max_samples "
            "monotonic_cst",
        ),
        "lightgbm": (
            "LGBMRegressor",
            "boosting_type num_leaves max_depth learning_rate n_estimators subsample_for_bin "
            "objective class_weight min_split_gain min_child_weight min_child_samples "
            "subsample subsample_freq colsample_bytree reg_alpha reg_lambda random_state "
            "n_jobs importance_type",
        ),
        "gbr": (
            "GradientBoostingRegressor",
            "loss learning_rate n_estimators subsample criterion min_samples_split "
            "min_samples_leaf min_weight_fraction_leaf max_depth min_impurity_decrease init "
            "random_state max_features alpha verbose max_leaf_nodes warm_start "
            "validation_fraction n_iter_no_change tol ccp_alpha",
        ),
        "ada": (
            "AdaBoostRegressor",
            "estimator n_estimators learning_rate loss random_state",
        ),
        "knn": (
            "KNeighborsRegressor",
            "n_neighbors weights algorithm leaf_size p metric metric_params n_jobs",
        ),
        "mlp": (
            "MLPRegressor",
            "hidden_layer_sizes activation solver alpha batch_size learning_rate "
            "learning_rate_init power_t max_iter shuffle random_state tol verbose warm_start "
            "momentum nesterovs_momentum early_stopping validation_fraction beta_1 beta_2 "
            "epsilon n_iter_no_change max_fun",
        ),
        "dummy": (
            "DummyRegressor",
            "strategy constant quantile",
        ),
    },
    "clustering": {
        "kmeans": (
            "KMeans",
            "n_clusters init n_init max_iter tol verbose random_state copy_x algorithm",
        ),
        "birch": (
            "Birch",
            "threshold branching_factor n_clusters compute_labels copy",
        ),
        "hclust": (
            "AgglomerativeClustering",
            "n_clusters metric memory connectivity compute_full_tree linkage "
            "distance_threshold compute_distances",
        ),
        "dbscan": (
            "DBSCAN",
            "eps min_samples metric metric_params algorithm leaf_size p n_jobs",
        ),
        "optics": (
            "OPTICS",
            "min_samples max_eps metric p metric_params cluster_method eps xi "
            "predecessor_correction min_cluster_size algorithm leaf_size memory n_jobs",
        ),
        "meanshift": (
            "MeanShift",
            "bandwidth seeds bin_seeding min_bin_freq cluster_all n_jobs max_iter",
        ),
        "sc": (
            "SpectralClustering",
            "n_clusters eigen_solver n_components random_state n_init gamma affinity "
            "n_neighbors eigen_tol assign_labels degree coef0 kernel_params n_jobs verbose",
        ),
        "ap": (
            "AffinityPropagation",
            "damping max_iter convergence_iter copy preference affinity verbose random_state",
        ),
    },
}

# LGBMClassifier/LGBMRegressor pass other keyword arguments to the booster: these common booster
# parameters are accepted too (anything else there is a typo LightGBM would only warn about).
LIGHTGBM_BOOSTER_PARAMS = (
    "verbose max_bin min_data_in_leaf feature_fraction bagging_fraction bagging_freq lambda_l1 "
    "lambda_l2 extra_trees path_smooth linear_tree min_sum_hessian_in_leaf deterministic "
    "force_col_wise force_row_wise"
)


def estimator_parameters(task: str, estimator: str) -> tuple[str, list[str]]:
    """The class behind a PyCaret estimator id and the keyword arguments it takes."""
    class_name, names = ESTIMATOR_PARAMS[task][estimator]
    valid = names.split()
    if estimator == "lightgbm":
        valid += LIGHTGBM_BOOSTER_PARAMS.split()
    return class_name, valid


def _fail(model: str, field_name: str, message: str) -> DeclarationError:
    separator = "" if message.startswith("=") else " "
    return DeclarationError(f"ModelSpec {model!r}: {field_name}{separator}{message}")


@dataclass(frozen=True)
class Preprocessing:
    """What PyCaret's setup does to the features before the estimators see them.

    `numeric_imputation` is "mean", "median", "mode" or a number; 0 fits features whose
    null means "no activity" (the sample world's counts).
    """

    numeric_imputation: str | float = "median"
    categorical_imputation: str = "mode"
    normalize: bool = False
    normalize_method: Literal["zscore", "minmax", "maxabs", "robust"] = "zscore"
    transformation: bool = False  # Yeo-Johnson power transform (tames heavy tails)
    fix_imbalance: bool = False
    remove_multicollinearity: float | None = None
    max_encoding_ohe: int = 25

    def check(self, model: str) -> None:
        imputation = self.numeric_imputation
        if isinstance(imputation, bool) or not (
            imputation in IMPUTATIONS
            or (isinstance(imputation, int | float) and math.isfinite(imputation))
        ):
            raise _fail(
                model,
                "preprocessing.numeric_imputation",
                f"={imputation!r} is not valid; use one of {', '.join(IMPUTATIONS)} or a number",
            )
        if not isinstance(self.categorical_imputation, str) or not self.categorical_imputation:
            raise _fail(
                model, "preprocessing.categorical_imputation", "must be 'mode' or a fill value"
            )
        if self.normalize_method not in ("zscore", "minmax", "maxabs", "robust"):
            raise _fail(
                model,
                "preprocessing.normalize_method",
                f"={self.normalize_method!r}: use zscore, minmax, maxabs or robust",
            )
        if self.remove_multicollinearity is not None and not 0 < self.remove_multicollinearity <= 1:
            raise _fail(
                model, "preprocessing.remove_multicollinearity", "must be a threshold in (0, 1]"
            )
        if self.max_encoding_ohe < 0:
            raise _fail(model, "preprocessing.max_encoding_ohe", "must be ≥ 0")

    def setup_kwargs(self, task: str) -> dict[str, Any]:
        """The keyword arguments of PyCaret's `setup` these options stand for."""
        kwargs: dict[str, Any] = {
            "numeric_imputation": self.numeric_imputation,
            "categorical_imputation": self.categorical_imputation,
            "normalize": self.normalize,
            "normalize_method": self.normalize_method,
            "max_encoding_ohe": self.max_encoding_ohe,
            "transformation": self.transformation,
        }
        if self.remove_multicollinearity is not None:
            kwargs["remove_multicollinearity"] = True
            kwargs["multicollinearity_threshold"] = self.remove_multicollinearity
        if task == "classification" and self.fix_imbalance:
            kwargs["fix_imbalance"] = True
        return kwargs


@dataclass(frozen=True)
class PromotionRule:
    """When a candidate replaces the champion.

    The candidate is promoted when the one-sided (1 − significance) lower confidence bound of
    its improvement in the deciding metric over the champion, on the same later held-out slice,
    exceeds `min_improvement` — that is, when the paired test rejects "improvement ≤
    min_improvement" at the significance level. `test="mcnemar"` (classification) decides on
    accuracy with an exact McNemar test instead. Clustering also requires the candidate's
    assignment stability (adjusted Rand index) to reach `min_stability`.
    """

    min_improvement: float = 0.0
    significance: float = 0.05
    test: Literal["paired_bootstrap", "mcnemar"] = "paired_bootstrap"
    n_bootstrap: int = 1000
    min_stability: float = 0.5

    def check(self, model: str, task: str) -> None:
        if not 0 < self.significance < 0.5:
            raise _fail(
                model, "promotion.significance", f"={self.significance!r} must be in (0, 0.5)"
            )
        if not math.isfinite(self.min_improvement) or self.min_improvement < 0:
            raise _fail(model, "promotion.min_improvement", "must be a finite number ≥ 0")
        if self.test not in ("paired_bootstrap", "mcnemar"):
            raise _fail(
                model, "promotion.test", f"={self.test!r}: use 'paired_bootstrap' or 'mcnemar'"
            )
        if self.test == "mcnemar" and task != "classification":
            raise _fail(model, "promotion.test", "'mcnemar' applies to classification only")
        if self.n_bootstrap < 100:
            raise _fail(model, "promotion.n_bootstrap", "must be at least 100")
        if not -1 <= self.min_stability <= 1:
            raise _fail(model, "promotion.min_stability", "is an adjusted Rand index in [-1, 1]")


@dataclass(frozen=True)
class Canary:
    """A challenger that answers a share of live traffic, and how it is judged against the
    champion.

    The API sends an entity to the challenger when a hash of the model's name and the entity's
    key falls below `share`: the split is sticky (an entity always meets the same variant) and
    raising `share` only moves entities from the champion to the challenger. `challenger` is an
    MLflow alias (default `challenger`) or a version number. The `<model>_canary_analysis` asset
    compares the two groups' outcomes on the deciding metric with an unpaired test: promote when
    the (1 − `significance`) confidence interval of challenger − champion (oriented so that
    positive is better) lies above 0; roll back when it lies below 0, or when the sample that
    `power` needs to detect `min_effect` is in and the interval excludes `min_effect`; else wait,
    with the number of outcomes still needed.
    """

    challenger: str | int = "challenger"
    share: float = 0.1
    min_effect: float = 0.01
    power: float = 0.8
    significance: float = 0.05
    min_outcomes: int = 100  # per variant, before any decision
    n_bootstrap: int = 2000

    def check(self, model: str, task: str) -> None:
        if task == "clustering":
            raise _fail(model, "canary", "applies to classification and regression (outcomes)")
        challenger = self.challenger
        if isinstance(challenger, bool) or not (
            (isinstance(challenger, int) and challenger >= 1)
            or (
                isinstance(challenger, str)
                and challenger.replace("-", "_").isidentifier()
                and challenger != "champion"
            )
        ):
            raise _fail(
                model,
                "canary.challenger",
                f"={challenger!r} must be an MLflow alias other than 'champion' (such as "
                "'challenger') or a version number ≥ 1",
            )
        if not 0 < self.share < 1:
            raise _fail(model, "canary.share", f"={self.share!r} must be a share in (0, 1)")
        if not math.isfinite(self.min_effect) or self.min_effect <= 0:
            raise _fail(model, "canary.min_effect", "must be a finite number > 0")
        if not 0 < self.power < 1:
            raise _fail(model, "canary.power", f"={self.power!r} must be in (0, 1)")
        if not 0 < self.significance < 0.5:
            raise _fail(model, "canary.significance", f"={self.significance!r} must be in (0, 0.5)")
        if self.min_outcomes < 10:
            raise _fail(model, "canary.min_outcomes", "must be at least 10")
        if self.n_bootstrap < 200:
            raise _fail(model, "canary.n_bootstrap", "must be at least 200")


@dataclass(frozen=True)
class TrainingWindow:
    """Which rows of the training set train the model and which later rows judge it.

    The held-out slice is the last `holdout_days` of label time; training rows end `gap_days`
    before it (set it to the label horizon so no training label's outcome window overlaps the
    slice) and reach back `train_days` (None: to the start). Both slices are sampled down to at
    most `max_train_rows` / `max_holdout_rows` rows to bound the cost.
    """

    holdout_days: int = 21
    train_days: int | None = None
    gap_days: int = 0
    max_train_rows: int = 20_000
    max_holdout_rows: int = 20_000

    def check(self, model: str) -> None:
        if self.holdout_days < 1:
            raise _fail(model, "window.holdout_days", "must be at least 1 day")
        if self.train_days is not None and self.train_days < 1:
            raise _fail(model, "window.train_days", "must be at least 1 day (or None for all)")
        if self.gap_days < 0:
            raise _fail(model, "window.gap_days", "must be ≥ 0")
        for name in ("max_train_rows", "max_holdout_rows"):
            if getattr(self, name) < 100:
                raise _fail(model, f"window.{name}", "must be at least 100")


THRESHOLD_RULES = ("contact_budget", "max_f1", "fixed")


@dataclass(frozen=True)
class DecisionThreshold:
    """How a classifier's scores become decisions, chosen for what the decisions are for.

    The threshold is chosen when the candidate is trained, on the training slice's internal test
    rows (scored by the model fitted on the other 80 %, never on the held-out slice), and stored
    with the version:

    - `contact_budget`: the score above which the top `budget` share of customers fall — e.g. the
      retention team can contact 10 % of customers per label window; recall at that budget is
      what the evaluation reports.
    - `max_f1`: the threshold with the highest F1 on those rows.
    - `fixed`: `value`.
    """

    rule: Literal["contact_budget", "max_f1", "fixed"] = "max_f1"
    budget: float | None = None
    value: float = 0.5

    def check(self, model: str) -> None:
        if self.rule not in THRESHOLD_RULES:
            raise _fail(
                model,
                "threshold.rule",
                f"={self.rule!r} is unknown; use one of {', '.join(THRESHOLD_RULES)}",
            )
        if self.rule == "contact_budget" and (self.budget is None or not 0 < self.budget < 1):
            raise _fail(model, "threshold.budget", "must be the share of rows to flag, in (0, 1)")
        if self.rule != "contact_budget" and self.budget is not None:
            raise _fail(model, "threshold.budget", "applies to rule='contact_budget' only")
        if not 0 <= self.value <= 1:
            raise _fail(model, "threshold.value", "must be a score in [0, 1]")

    def describe(self) -> str:
        if self.rule == "contact_budget":
            return f"contact budget: flag the top {self.budget:.0%} of customers by score"
        if self.rule == "max_f1":
            return "the F1-maximizing threshold on the training slice's internal test rows"
        return f"fixed at {self.value:g}"


@dataclass(frozen=True)
class NaiveBaseline:
    """The forecast a regression must beat without a model: the sum of `feature` over the
    entity's training-set rows `lags_days` before each row (0 is the row itself), times `scale`.

    A lag row that does not exist (the customer was not there yet) counts 0. On the sample
    world's weekly snapshots, `NaiveBaseline("minutes_7d", (0, 7))` is the minutes the customer
    watched over the last 14 days.
    """

    feature: str
    lags_days: tuple[int, ...] = (0,)
    scale: float = 1.0
    description: str = ""

    def check(self, model: str) -> None:
        if not self.lags_days or any(not isinstance(lag, int) or lag < 0 for lag in self.lags_days):
            raise _fail(model, "baseline.lags_days", "must list whole days ≥ 0")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise _fail(model, "baseline.scale", "must be a finite number > 0")

    @property
    def label(self) -> str:
        return self.description or (
            f"{self.scale:g} × sum of {self.feature} at lags {', '.join(map(str, self.lags_days))} days"
        )


@dataclass(frozen=True)
class ModelSpec:
    """A model Mallard trains, judges and serves.

    `features` defaults to every feature of `feature_service`; `label` is a label column of
    `training_set` (none for clustering); `metric` decides both the leaderboard and promotion;
    `estimators` are PyCaret ids from at least three families, `estimator_params` overrides
    their constructor arguments (e.g. fewer trees; names are checked against the estimator's
    signature); `time_budget` (seconds) bounds the model comparison. A classifier's `threshold`
    (None: `DecisionThreshold()`, F1-maximizing) turns scores into decisions; a regression's
    `baseline` is the naive forecast its evaluation compares with.
    """

    name: str
    task: Task
    training_set: str
    feature_service: str
    metric: str
    estimators: Sequence[str]
    label: str | None = None
    features: Sequence[str] | None = None
    estimator_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    folds: int = 3
    time_budget: float = 60.0
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    promotion: PromotionRule = field(default_factory=PromotionRule)
    window: TrainingWindow = field(default_factory=TrainingWindow)
    num_clusters: int = 4
    threshold: DecisionThreshold | None = None
    baseline: NaiveBaseline | None = None
    seed: int = 7
    description: str = ""
    owner: str = ""
    # What the serving API does with input that fails the training-statistics checks: `warn`
    # answers and flags each row and field, `reject` refuses (422) naming the field and rule.
    strictness: Literal["warn", "reject"] = "warn"
    # A challenger serving a share of traffic, judged by the canary analysis (None: no canary).
    canary: Canary | None = None

    def __post_init__(self) -> None:
        check_identifier("ModelSpec", self.name)
        name = self.name
        if self.strictness not in ("warn", "reject"):
            raise _fail(name, "strictness", f"={self.strictness!r}: use 'warn' or 'reject'")
        if self.task not in TASKS:
            raise _fail(
                name, "task", f"={self.task!r} is unknown; choose one of {', '.join(TASKS)}"
            )
        if self.task == "clustering":
            if self.label is not None:
                raise _fail(name, "label", "must be None for clustering (it learns no label)")
        elif not self.label:
            raise _fail(name, "label", f"is required for {self.task}")
        metrics = METRICS[self.task]
        if self.metric not in metrics:
            raise _fail(
                name,
                "metric",
                f"={self.metric!r} is not a {self.task} metric; choose one of {', '.join(metrics)}",
            )
        known = ESTIMATORS[self.task]
        if isinstance(self.estimators, str) or not self.estimators:
            raise _fail(name, "estimators", "must list PyCaret estimator ids")
        for estimator in self.estimators:
            if estimator not in known:
                raise _fail(
                    name,
                    "estimators",
                    f"holds {estimator!r}, which is not a {self.task} estimator "
                    f"({', '.join(sorted(known))})",
                )
        if len(set(self.estimators)) != len(self.estimators):
            raise _fail(name, "estimators", "lists an estimator twice")
        families = {known[e] for e in self.estimators}
        if len(families) < MIN_FAMILIES:
            raise _fail(
                name,
                "estimators",
                f"span {len(families)} famil{'y' if len(families) == 1 else 'ies'} "
                f"({', '.join(sorted(families))}); compare at least {MIN_FAMILIES}",
            )
        for estimator, params in self.estimator_params.items():
            if estimator not in self.estimators:
                raise _fail(
                    name, "estimator_params", f"sets {estimator!r}, which is not in estimators"
                )
            class_name, valid = estimator_parameters(self.task, estimator)
            for param in params:
                if param not in valid:
                    close = difflib.get_close_matches(param, valid, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise _fail(
                        name,
                        f"estimator_params[{estimator!r}]",
                        f"sets {param!r}, which {class_name} ({estimator!r}) does not take{hint}; "
                        f"valid parameters: {', '.join(sorted(valid))}",
                    )
        if isinstance(self.time_budget, bool) or not (
            isinstance(self.time_budget, int | float)
            and math.isfinite(self.time_budget)
            and self.time_budget > 0
        ):
            raise _fail(
                name, "time_budget", f"={self.time_budget!r} must be a number of seconds > 0"
            )
        if not isinstance(self.folds, int) or not 2 <= self.folds <= 20:
            raise _fail(name, "folds", f"={self.folds!r} must be an integer from 2 to 20")
        if self.task == "clustering" and not 2 <= self.num_clusters <= 50:
            raise _fail(name, "num_clusters", "must be from 2 to 50")
        if self.features is not None:
            if isinstance(self.features, str) or not self.features:
                raise _fail(name, "features", "must list feature names (or be None for all)")
            if len(set(self.features)) != len(self.features):
                raise _fail(name, "features", "lists a feature twice")
        if self.threshold is not None:
            if self.task != "classification":
                raise _fail(name, "threshold", "applies to classification only")
            self.threshold.check(name)
        if self.baseline is not None:
            if self.task != "regression":
                raise _fail(name, "baseline", "applies to regression only")
            self.baseline.check(name)
        self.preprocessing.check(name)
        self.promotion.check(name, self.task)
        self.window.check(name)
        if self.canary is not None:
            self.canary.check(name, self.task)

    @property
    def decision_threshold(self) -> DecisionThreshold | None:
        """The declared threshold rule (classification; F1-maximizing when none is declared)."""
        if self.task != "classification":
            return None
        return self.threshold or DecisionThreshold()

    @property
    def leaderboard_metric(self) -> str:
        """PyCaret's column name for the deciding metric."""
        return METRICS[self.task][self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.task][self.metric][1]

    @property
    def families(self) -> dict[str, str]:
        return {e: ESTIMATORS[self.task][e] for e in self.estimators}

    def describe(self) -> dict[str, Any]:
        """A flat, JSON-friendly view of the declaration (logged as MLflow parameters)."""
        return {
            "task": self.task,
            "training_set": self.training_set,
            "feature_service": self.feature_service,
            "label": self.label or "",
            "metric": self.metric,
            "estimators": ",".join(self.estimators),
            "estimator_params": repr(dict(self.estimator_params)),
            "folds": self.folds,
            "time_budget_s": self.time_budget,
            "seed": self.seed,
            "num_clusters": self.num_clusters if self.task == "clustering" else "",
            "threshold": self.decision_threshold.describe() if self.decision_threshold else "",
            "baseline": self.baseline.label if self.baseline else "",
            **{f"preprocessing.{k}": v for k, v in vars(self.preprocessing).items()},
            **{f"promotion.{k}": v for k, v in vars(self.promotion).items()},
            **{f"window.{k}": v for k, v in vars(self.window).items()},
            **{f"canary.{k}": v for k, v in vars(self.canary or Canary()).items()},
        }


class ModelCatalog:
    """The deployment's models, each checked against the feature registry and training sets.

    `features` of each model resolve to feature names of its service (`None` means all of them).
    """

    def __init__(
        self,
        models: Iterable[ModelSpec],
        registry: FeatureRegistry,
        training_sets: Iterable[TrainingSetSpec],
    ) -> None:
        sets = {spec.name: spec for spec in training_sets}
        self._models: dict[str, ModelSpec] = {}
        self._features: dict[str, list[str]] = {}
        for model in models:
            if not isinstance(model, ModelSpec):
                raise DeclarationError(f"ModelCatalog: {model!r} is not a ModelSpec")
            if model.name in self._models:
                raise _fail(model.name, "name", "is declared twice")
            if model.feature_service not in registry.services:
                raise _fail(
                    model.name,
                    "feature_service",
                    f"={model.feature_service!r} is not a declared feature service "
                    f"({', '.join(sorted(registry.services))})",
                )
            training_set = sets.get(model.training_set)
            if training_set is None:
                raise _fail(
                    model.name,
                    "training_set",
                    f"={model.training_set!r} is not a declared training set "
                    f"({', '.join(sorted(sets))})",
                )
            if training_set.service != model.feature_service:
                raise _fail(
                    model.name,
                    "training_set",
                    f"{model.training_set!r} is built from service {training_set.service!r}, "
                    f"not {model.feature_service!r}",
                )
            if model.label is not None and model.label not in training_set.labels:
                raise _fail(
                    model.name,
                    "label",
                    f"={model.label!r} is not a label of training set {model.training_set!r} "
                    f"({', '.join(training_set.labels)})",
                )
            served = [
                ref.feature.name
                for ref in registry.resolve(
                    [model.feature_service], owner=f"ModelSpec {model.name!r}"
                )
            ]
            if model.features is None:
                chosen = served
            else:
                missing = [f for f in model.features if f not in served]
                if missing:
                    raise _fail(
                        model.name,
                        "features",
                        f"{', '.join(map(repr, missing))} not served by feature service "
                        f"{model.feature_service!r} (it serves {', '.join(served)})",
                    )
                chosen = list(model.features)
            if model.baseline is not None and model.baseline.feature not in served:
                raise _fail(
                    model.name,
                    "baseline.feature",
                    f"={model.baseline.feature!r} is not served by feature service "
                    f"{model.feature_service!r}",
                )
            self._models[model.name] = model
            self._features[model.name] = chosen
        self.feature_types: dict[str, str] = {
            ref.feature.name: ref.feature.type
            for service in {m.feature_service for m in self._models.values()}
            for ref in registry.resolve([service])
        }

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._models[name]
        except KeyError:
            raise KeyError(
                f"no model named {name!r} is declared (models: {', '.join(self._models) or 'none'})"
            ) from None

    def features(self, name: str) -> list[str]:
        """The feature columns model `name` trains on, in service order."""
        self.get(name)
        return list(self._features[name])
