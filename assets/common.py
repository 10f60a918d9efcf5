"""What the asset modules share: the daily partitions, and small metadata renderers."""

import datetime as dt
import warnings
from pathlib import Path

import dagster as dg

from mallard.config import get_settings

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


def png_markdown(path: Path) -> str:
    """A PNG embedded in Markdown, so the Dagster UI shows it inline."""
    import base64

    return f"![plot](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def trend_plot(rows: list[dict], value_label: str, threshold: float | None, out: Path) -> str:
    """A small line plot of `value` over `day` (with a threshold line), saved and embedded."""
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
    return png_markdown(out)
