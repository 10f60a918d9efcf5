"""Schemathesis against the OpenAPI document, over every route: no server error, ever, and every
refusal a 4xx with a JSON error body.

Generated from the document the server publishes (`/openapi.json`), valid (positive) and
invalid (negative) inputs, with the models, the prompt and the view of the test world pinned in
part of the runs so that generation reaches past "no such model". Derandomized: the same
requests every run. Sized for `make test` (at least 1,000 requests, about 20–40 s on 2 cores);
they are sent with an admin key the generated requests cannot revoke (a key cannot revoke or
rotate itself over the API, and generated prefixes do not name the other keys).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from serving_helpers import Server, auth
from world import CANARY_MODEL, MODEL, PROMPT, SCHEMA_MODEL, STRICT

schemathesis = pytest.importorskip("schemathesis")

MIN_REQUESTS = 1_000
EXAMPLES = {"positive": 45, "negative": 35}
# Runs with a path parameter pinned to something that exists, beside the fully generated ones.
PINNED = {
    "POST /v1/models/{name}/predict": [{"name": MODEL}, {"name": STRICT}, {"name": CANARY_MODEL}],
    "POST /v1/models/{name}/explain": [{"name": MODEL}, {"name": STRICT}],
    "GET /v1/models/{name}/schema": [{"name": SCHEMA_MODEL}],
    "GET /v1/prompts/{name}": [{"name": PROMPT}],
}


def test_no_server_errors_and_json_refusals(server: Server, keys: dict[str, str]) -> None:
    import requests
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    headers = auth(keys["fuzz"])
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    session = requests.Session()

    def check(label: str, case, response) -> None:
        sent[label] += 1
        statuses[response.status_code] += 1
        where = f"{case.method} {case.formatted_path} {case.query or ''} {str(case.body)[:200]}"
        if response.status_code >= 500:
            problems.append(f"{response.status_code} from {where}: {response.text[:300]}")
            return
        if "Traceback" in response.text:
            problems.append(f"a stack trace in the response to {where}")
        if 400 <= response.status_code < 500:
            try:
                error = response.json()["error"]
                assert error["code"] and error["message"]
            except (ValueError, KeyError, TypeError, AssertionError):
                problems.append(f"{response.status_code} without a JSON error body from {where}")

    for operation in operations:
        runs = [None, *PINNED.get(operation.label, [])]
        for pinned in runs:
            for mode_name, examples in EXAMPLES.items():
                mode = GenerationMode(mode_name)
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)

                def make(label: str, strategy, count: int):
                    @settings(
                        max_examples=count,
                        deadline=None,
                        derandomize=True,
                        database=None,
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck),
                    )
                    @given(case=strategy)
                    def run(case) -> None:
                        response = case.call(base_url=server.url, session=session, headers=headers)
                        check(label, case, response)

                    return run

                test = make(
                    operation.label, strategy, examples if pinned is None else examples // 2
                )
                try:
                    test()
                except Unsatisfiable:
                    if mode is not GenerationMode.NEGATIVE:
                        raise  # (an operation without inputs has no invalid request to send)
    total = sum(sent.values())
    summary = json.dumps({"requests": total, "by_status": dict(sorted(statuses.items()))})
    print(summary)
    assert not problems, "\n".join(problems[:20])
    assert total >= MIN_REQUESTS, summary
    assert set(sent) == {op.label for op in operations}, "an operation was never called"
    # The fuzzer's key survived everything it sent.
    assert session.get(f"{server.url}/v1/whoami", headers=headers).status_code == 200
