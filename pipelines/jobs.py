"""Jobs people launch by name: the demo materializes everything end to end."""

from __future__ import annotations

import dagster as dg

demo_job = dg.define_asset_job(
    "demo",
    selection=dg.AssetSelection.all(),
    description="Materialize every asset of the sample world end to end.",
)

JOBS = [demo_job]
