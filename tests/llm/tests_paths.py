"""Paths the LLM tests read from the repository."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CATALOG_PROMPTS = ROOT / "catalog" / "prompts"
