"""What the asset modules share: the daily partitions, and small metadata renderers."""

import datetime as dt
import warnings
from pathlib import Path

import dagster as dg

from mallard.config import Settings, get_settings

# Single-run backfills (a beta parameter) are what keep heavy imports to once per backfill.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().sample_start_date.isoformat(), end_offset=1
)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days of the partition (range) this run materializes."""
    window = context.partition_time_window
    first = window.start.date()
    return [first + dt.timedelta(days=i) for i in range((window.end.date() - first).days)]


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows as a Markdown table for `MetadataValue.md`."""
    if not rows:
        return "(no rows)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines)


# The reports server: `mallard serve` (started by `make dev`) serves MALLARD_HOME/reports
# read-only under this route; Dagster's UI shows only http(s) images, never data: URIs.
REPORTS_ROUTE = "/reports"
DAGSTER_UI = "http://127.0.0.1:3000"  # `make dev`
MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow`


def reports_base_url(settings: Settings) -> str:
    """Where the API server serves MALLARD_HOME/reports (MALLARD_SERVE_HOST and _PORT)."""
    host = settings.serve_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.serve_port}{REPORTS_ROUTE}"


def report_url(settings: Settings, path: Path | str) -> str:
    """The URL of a file under MALLARD_HOME/reports on the reports server."""
    from urllib.parse import quote

    relative = Path(path).resolve().relative_to(settings.reports_dir.resolve())
    return f"{reports_base_url(settings)}/{quote(relative.as_posix())}"


def mlflow_ui(settings: Settings) -> str:
    """The MLflow UI: the tracking server itself, or `make mlflow` for the embedded store."""
    uri = settings.mlflow_tracking_uri
    return uri.rstrip("/") if uri.startswith("http") else MLFLOW_UI


def mlflow_run_url(
    settings: Settings, run_id: str, experiment_id: str | None = None, *, genai: bool = False
) -> str:
    """An MLflow run in the UI, in the view its experiment is made for (classic for models,
    GenAI for evaluations: docs/MODELS.md, "MLflow's two views")."""
    view = "genai" if genai else "machine_learning"
    where = f"experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"runs/{run_id}"
    return f"{mlflow_ui(settings)}/#/{where}?workflowType={view}"


def png_markdown(path: Path, settings: Settings, title: str = "plot") -> str:
    """A Markdown image of a PNG under MALLARD_HOME/reports, served by the reports server (the
    Dagster UI renders only http(s) images in Markdown)."""
    return f"![{title}]({report_url(settings, path)})"


def plots_markdown(settings: Settings, figures: dict[str, Path]) -> str:
    """Each figure as a titled Markdown image (URLs on the reports server)."""
    return "\n\n".join(
        f"**{name.replace('_', ' ')}**\n\n{png_markdown(path, settings, name)}"
        for name, path in figures.items()
    )


def plots_page(
    settings: Settings, folder: Path, title: str, sections: dict[str, list[Path]]
) -> str:
    """Write `folder/index.html` showing every PNG of `sections` (heading → files, those that
    exist), and return its URL on the reports server: the plots one click from the asset page."""
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font:14px/1.4 sans-serif;margin:24px;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:6px 0 18px}"
        "h2{font-size:16px;margin:24px 0 4px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, files in sections.items():
        present = [f for f in files if Path(f).exists()]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for file in present:
            name = Path(file).stem.replace("_", " ")
            source = Path(file).relative_to(folder).as_posix()
            parts.append(
                f"<figure><img src='{html.escape(source)}' alt='{html.escape(name)}'>"
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return report_url(settings, page)


def trend_plot(
    rows: list[dict], value_label: str, threshold: float | None, out: Path, settings: Settings
) -> str:
    """A small line plot of `value` over `day` (with a threshold line), saved under
    MALLARD_HOME/reports, as a Markdown image on the reports server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    ax.plot([r["day"] for r in rows], [r["value"] for r in rows], marker=".", lw=1)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label="threshold")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel(value_label)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return png_markdown(out, settings, value_label)
