"""The sample world's hosted assistant model, simulated: what stands in for `openai-gpt-4o-mini`.

The production traces (`generate._traces_frame`) were answered by a hosted model that cannot
exist here. A shadow run replays a candidate prompt on those traces' endpoint, so something has
to answer in its place: `scripted_assistant()` is an OpenAI-compatible HTTP server on 127.0.0.1
(`mallard.llm.testing.FakeOpenAIServer`) that answers from the help-centre seeds according to the
prompt it receives. A prompt that gives it the retrieved articles and asks it to use only them
gets the seed's grounded answer; any other prompt gets the regressed answer that ignores them. It
is a simulation of the model's behaviour, not a model: it shows what the shadow machinery does
with a better prompt, not how good a real model's answers would be.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from mallard.llm.testing import FakeOpenAIServer
from mallard.sample_world.generate import HELPCENTRE_DIR

HOSTED_MODEL = "gpt-4o-mini"
GROUNDING_INSTRUCTION = "using only the help-centre articles"
NO_SEED_ANSWER = "I'm sorry, I can only help with questions about your Pondstream account."


@lru_cache(maxsize=1)
def _seeds() -> tuple[dict[str, Any], ...]:
    lines = (HELPCENTRE_DIR / "trace_seeds.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def scripted_answer(body: dict[str, Any]) -> str:
    """The answer to one chat-completions request: the grounded answer of the seed whose question
    it asks when the prompt carries articles (`[HC-…]`) and the grounding instruction, the
    regressed answer otherwise, a polite refusal for a question no seed asks."""
    text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
    seed = next((s for s in _seeds() if any(p in text for p in s["paraphrases"])), None)
    if seed is None:
        return NO_SEED_ANSWER
    grounded = GROUNDING_INSTRUCTION in text and "[HC-" in text
    return seed["grounded_answer" if grounded else "ungrounded_answer"]


def scripted_assistant() -> FakeOpenAIServer:
    """The stand-in server, not started: `with scripted_assistant() as server: server.base_url`."""
    return FakeOpenAIServer(model=HOSTED_MODEL, reply=scripted_answer)
