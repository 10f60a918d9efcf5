"""Versioned prompts: templates in `catalog/prompts/*.toml`, immutable versions in the lake,
labels (staging, live, any custom) moved only by recorded promote/rollback.

    registry = PromptRegistry.default()
    prompt = registry.get("support_assistant", label="live")
    messages = prompt.render(question="…", context="…")
"""

from mallard.llm.prompts.registry import (
    LabelEvent,
    PromptRegistry,
    PromptVersion,
    sync_prompt_files,
)
from mallard.llm.prompts.template import PromptTemplate

__all__ = ["LabelEvent", "PromptRegistry", "PromptTemplate", "PromptVersion", "sync_prompt_files"]
