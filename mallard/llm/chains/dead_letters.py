"""The dead-letter table: chain items that failed, with the step and the error (one schema, owned here).

A Delta table at `<lake>/llm_dead_letters`; a batch appends its failed items in one commit."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

DEAD_LETTER_COLUMNS: dict[str, str] = {
    "dead_letter_id": "unique id of the row",
    "timestamp": "UTC time the item failed",
    "chain": "chain name",
    "run_id": "chain run (batch) id",
    "item_index": "position of the item in the batch",
    "item_id": "the item's own id (question id) or its index",
    "failed_step": "step that failed",
    "error_type": "exception class",
    "error": "error message",
    "attempts": "attempts of the failed step",
    "inputs": "JSON of the item's inputs",
    "completed_steps": "JSON of the outputs of the steps that had finished",
}


def dead_letter_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("dead_letter_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("chain", pa.string()),
            ("run_id", pa.string()),
            ("item_index", pa.int32()),
            ("item_id", pa.string()),
            ("failed_step", pa.string()),
            ("error_type", pa.string()),
            ("error", pa.string()),
            ("attempts", pa.int32()),
            ("inputs", pa.string()),
            ("completed_steps", pa.string()),
        ]
    )


def dead_letter_row(
    *,
    chain: str,
    run_id: str,
    item_index: int,
    item_id: str,
    failed_step: str,
    error: BaseException,
    attempts: int,
    inputs: Any,
    completed_steps: Any,
) -> dict[str, Any]:
    return {
        "dead_letter_id": uuid.uuid4().hex,
        "timestamp": datetime.now(UTC),
        "chain": chain,
        "run_id": run_id,
        "item_index": item_index,
        "item_id": item_id,
        "failed_step": failed_step,
        "error_type": type(error).__name__,
        "error": str(error)[:4000],
        "attempts": attempts,
        "inputs": json.dumps(inputs, default=str, ensure_ascii=False),
        "completed_steps": json.dumps(completed_steps, default=str, ensure_ascii=False)[:100_000],
    }


def write_dead_letters(table_path: Path | str, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    import pyarrow as pa
    from deltalake import write_deltalake

    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(
        str(table_path), pa.Table.from_pylist(rows, schema=dead_letter_schema()), mode="append"
    )
    return len(rows)


def read_dead_letters(table_path: Path | str) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    if not (Path(table_path) / "_delta_log").is_dir():
        return []
    return DeltaTable(str(table_path)).to_pyarrow_table().to_pylist()
