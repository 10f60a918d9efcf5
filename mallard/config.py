"""Mallard's settings: one object, read from `MALLARD_*` environment variables.

Every path Mallard writes lives under `MALLARD_HOME`; the properties below derive them,
so no other module builds a path of its own.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CUSTOMERS = 20_000
SAMPLE_DAYS = 120
MAX_SAMPLE_SCALE = 50.0


class ConfigError(ValueError):
    """A setting has a value Mallard cannot use; the message names the setting and the fix."""


def _require_http_url(url: str, what: str) -> None:
    if not str(url).startswith(("http://", "https://")):
        raise ValueError(
            f"{what}must be an http(s) URL of an OpenAI-compatible server, e.g. "
            "http://127.0.0.1:8765/v1"
        )


class Settings(BaseSettings):
    """Mallard's configuration. Each field is read from `MALLARD_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MALLARD_", extra="ignore")

    home: Path = Path(".mallard")
    env: Literal["local", "prod"] = "local"
    seed: int = 7
    sample_scale: float = 1.0
    end_date: dt.date | None = None
    today: dt.date | None = None
    llm_threads: int = 2
    alert_webhook_url: str | None = None
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    lake_root: Path | None = None
    mlflow_tracking_uri: str = ""
    llm_base_url: str | None = None
    llm_api_key_env: str | None = None
    llm_endpoint_urls: dict[str, str] = {}
    """Declared endpoint name → the URL it is reached at instead (a gateway, a proxy, a stand-in):
    MALLARD_LLM_ENDPOINT_URLS='{"openai-gpt-4o-mini": "http://127.0.0.1:4000/v1"}'."""
    judge_endpoint: str | None = None
    duckdb_memory_limit: str | None = None
    # The API server (`mallard serve`).
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_workers: int = 1
    serve_log_level: Literal["debug", "info", "warning", "error"] = "info"
    serve_models: str | None = None  # comma-separated model names; unset: every declared model
    serve_state: Literal["sqlite", "redis"] | None = None  # unset: sqlite locally, redis in prod
    server_secret: SecretStr | None = None  # keys' HMAC secret; required in prod
    serve_max_body_bytes: int = 1_048_576
    rate_limit_key_per_s: float = 20.0
    rate_limit_key_burst: int = 40
    rate_limit_address_per_s: float = 50.0
    rate_limit_address_burst: int = 100
    prediction_log_flush_s: float = 2.0
    prediction_log_flush_rows: int = 1000

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("lake_root", mode="after")
    @classmethod
    def _absolute_lake_root(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("llm_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _require_http_url(value, "")
        return value

    @field_validator("llm_endpoint_urls", mode="after")
    @classmethod
    def _endpoint_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            _require_http_url(url, f"{name!r} → {url!r}: ")
        return value

    @model_validator(mode="after")
    def _default_mlflow_store(self) -> Settings:
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        return self

    @field_validator("sample_scale", mode="after")
    @classmethod
    def _positive_scale(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a finite number > 0 (1.0 means about 20,000 customers)")
        if value > MAX_SAMPLE_SCALE:
            raise ValueError(
                f"must be at most {MAX_SAMPLE_SCALE:g} ({MAX_SAMPLE_SCALE * DEFAULT_CUSTOMERS:,.0f} "
                "customers); the sample world is for demos and tests"
            )
        return value

    @field_validator("llm_threads", mode="after")
    @classmethod
    def _positive_threads(cls, value: int) -> int:
        if not 1 <= value <= 256:
            raise ValueError("must be between 1 and 256 (threads for local LLM inference)")
        return value

    @field_validator("serve_port", mode="after")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65_535:
            raise ValueError("must be a TCP port from 1 to 65535")
        return value

    @field_validator("serve_workers", mode="after")
    @classmethod
    def _workers(cls, value: int) -> int:
        if not 1 <= value <= 64:
            raise ValueError("must be between 1 and 64 (server worker processes)")
        return value

    @field_validator(
        "serve_max_body_bytes",
        "rate_limit_key_per_s",
        "rate_limit_key_burst",
        "rate_limit_address_per_s",
        "rate_limit_address_burst",
        "prediction_log_flush_s",
        "prediction_log_flush_rows",
        mode="after",
    )
    @classmethod
    def _positive_number(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a finite number > 0")
        return value

    @property
    def served_models(self) -> list[str] | None:
        """MALLARD_SERVE_MODELS as a list (None: serve every declared model; "" serves none)."""
        if self.serve_models is None:
            return None
        return [name.strip() for name in self.serve_models.split(",") if name.strip()]

    @property
    def serve_state_kind(self) -> str:
        """Where the server keeps keys, rate-limit buckets and the audit log."""
        return self.serve_state or ("redis" if self.env == "prod" else "sqlite")

    # Paths under MALLARD_HOME -------------------------------------------------------------
    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def lake_dir(self) -> Path:
        """Delta tables owned by Mallard (features, logs, scores): MALLARD_LAKE_ROOT or home/lake."""
        return self.lake_root or self.home / "lake"

    @property
    def sample_dir(self) -> Path:
        """The generated sample world (the raw sources of the demo)."""
        return self.home / "sample"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def duckdb_spill_dir(self) -> Path:
        """Where DuckDB spills joins that exceed its memory limit."""
        return self.home / "tmp" / "duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_is_local(self) -> bool:
        """Whether MLflow is the embedded SQLite store (its artifacts then live under home)."""
        return self.mlflow_tracking_uri.startswith(("sqlite:", "file:", "/"))

    @property
    def monitoring_dir(self) -> Path:
        """Alert history and other small operational tables."""
        return self.home / "monitoring"

    @property
    def models_dir(self) -> Path:
        """Local model files (joined GGUFs) and other large cached artefacts."""
        return self.home / "models"

    @property
    def serve_dir(self) -> Path:
        """The API server's local state: keys, buckets, audit (SQLite), secret, metrics files."""
        return self.home / "serve"

    @property
    def buffers_dir(self) -> Path:
        """Write-ahead logs of the durable write-behind buffers (prediction log, traces)."""
        return self.home / "buffers"

    @property
    def online_store_path(self) -> Path:
        return self.home / "online" / "online_store.sqlite"

    @property
    def current_date(self) -> dt.date:
        """The day Mallard acts on (MALLARD_TODAY, default the UTC date): what makes evidence
        fresh or stale. The demo sets it to each simulated day it replays."""
        return self.today or dt.datetime.now(dt.UTC).date()

    @property
    def sample_end_date(self) -> dt.date:
        """Last simulated day of the sample world (MALLARD_END_DATE, default today)."""
        return self.end_date or dt.date.today()

    @property
    def sample_start_date(self) -> dt.date:
        """First simulated day; the start of every daily partitioned asset of the demo."""
        return self.sample_end_date - dt.timedelta(days=SAMPLE_DAYS - 1)

    @property
    def sample_customers(self) -> int:
        return max(1, round(DEFAULT_CUSTOMERS * self.sample_scale))

    def resolve(self, path: str | Path) -> Path:
        """A path relative to MALLARD_HOME (absolute paths are returned unchanged)."""
        path = Path(path)
        return path if path.is_absolute() else self.home / path

    def ensure_home(self) -> Settings:
        """Create MALLARD_HOME and the Dagster instance folder, or fail naming MALLARD_HOME."""
        try:
            self.dagster_home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"MALLARD_HOME={self.home} is not writable ({exc.strerror}): "
                "point MALLARD_HOME at a folder you can write to"
            ) from exc
        instance_yaml = PROJECT_ROOT / "dagster.yaml"
        target = self.dagster_home / "dagster.yaml"
        if instance_yaml.exists() and (
            not target.exists() or target.read_text() != instance_yaml.read_text()
        ):
            target.write_text(instance_yaml.read_text())
        return self


def _explain(error: ValidationError) -> ConfigError:
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = f"MALLARD_{field.upper()}"
        given = os.environ.get(variable, item.get("input"))
        problems.append(f"{variable}={given!r}: {item['msg']}")
    return ConfigError("Invalid Mallard configuration: " + "; ".join(problems))


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (and overrides), raising ConfigError on bad values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _explain(exc) from None
    except SettingsError as exc:  # a mapping setting whose value is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"MALLARD_{match.group(1).upper()}" if match else "a MALLARD_ variable"
        raise ConfigError(
            f"{name} is not valid JSON; give an object, e.g. "
            f"""{name}='{{"name": "value"}}' (README, "Configuration")"""
        ) from None


@lru_cache(maxsize=1)
def _cached_settings(_environment_key: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings()


def get_settings() -> Settings:
    """The settings for the current environment (re-read when MALLARD_* variables change)."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("MALLARD_")))
    return _cached_settings(key)
