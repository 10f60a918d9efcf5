"""The Python SDK (mallard.sdk) against a real server: httpx its only dependency, the TTL cache,
conditional refreshes in the background (ETag, 304), and the last known good version when the
server is stopped."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import HERE, ROOT, SERVER_SETTINGS, Server, free_port, server_env, start
from world import World

from mallard.sdk import MallardClient, PromptError, PromptUnavailable

PROMPT = "sdk_prompt"
HEAVY = ("pycaret", "mlflow", "dagster", "pandas", "numpy", "fastapi", "pydantic", "sklearn")


def test_the_sdk_imports_httpx_and_the_standard_library_only() -> None:
    code = (
        "import sys, mallard.sdk\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('mallard'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "", f"the SDK pulled in {out[0]}"
    assert out[1] == "mallard,mallard.sdk,mallard.sdk.prompts"
    for path in sorted((ROOT / "mallard" / "sdk").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert (
                    top in sys.stdlib_module_names
                    or top == "httpx"
                    or name.startswith("mallard.sdk")
                ), f"{path.name} imports {name}"


@pytest.fixture(scope="module")
def prompt_world(world: World) -> World:
    """Two versions of a prompt of the SDK's own, `live` on the first."""
    from mallard.config import load_settings
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.prompts.template import PromptTemplate

    registry = PromptRegistry.default(load_settings(home=world.home))
    for text in ("Answer {{question}} briefly.", "Answer {{question}} briefly and kindly."):
        template = PromptTemplate.from_content(
            PROMPT, {"messages": [["user", text]], "variables": ["question"]}
        )
        registry.register(template, actor="tests")
    registry.promote(PROMPT, 1, reason="sdk tests", actor="tests")
    return world


@pytest.fixture
def own_server(prompt_world: World, tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own: the tests stop it."""
    port = free_port()
    running = start(
        [sys.executable, str(HERE / "server_app.py"), str(port)],
        server_env(prompt_world.home, **SERVER_SETTINGS),
        port,
        tmp_path / "server.jsonl",
    )
    try:
        running.wait()
        yield running
    finally:
        running.stop()


def test_cache_refresh_and_fallback_when_the_server_stops(
    own_server: Server, keys: dict[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "prompts"
    with MallardClient(own_server.url, keys["ingest"], ttl_s=0.5, cache_dir=cache) as client:
        first = client.get_prompt(PROMPT, label="live")
        assert (first.source, first.version, first.fallback, first.stale) == (
            "server",
            1,
            False,
            False,
        )
        assert first.etag and first.label == "live"
        assert first.render(question="why?") == [
            {"role": "user", "content": "Answer why? briefly."}
        ]
        assert client.get_prompt(PROMPT, label="live").source == "cache"  # within the TTL
        pinned = client.get_prompt(PROMPT, version=2)
        assert pinned.version == 2 and pinned.source == "server"

        # Stale: answered at once from memory, refreshed in the background with the ETag (304).
        time.sleep(0.6)
        stale = client.get_prompt(PROMPT, label="live")
        assert stale.stale and stale.source == "cache" and stale.version == 1
        assert client.wait_idle()
        assert client.stats["not_modified"] == 1
        fresh = client.get_prompt(PROMPT, label="live")
        assert fresh.source == "cache" and not fresh.stale and fresh.fetched_at > first.fetched_at

        # The server stops: the stale entry still answers, and once its refresh has failed the
        # result says it is the last known good version.
        own_server.stop()
        time.sleep(0.6)
        during = client.get_prompt(PROMPT, label="live")
        assert during.version == 1 and during.stale
        assert client.wait_idle()
        fallback = client.get_prompt(PROMPT, label="live")
        assert fallback.fallback and fallback.source == "last_known_good"
        assert fallback.version == 1 and fallback.content == first.content
        assert "ConnectError" in (fallback.error or "")
        assert fallback.warning and "last known good version v1" in fallback.warning
        assert client.refresh(PROMPT, "live").fallback  # asking now fails the same way

    # A new process while the server is down: the copy on disk answers, flagged.
    with MallardClient(own_server.url, keys["ingest"], ttl_s=30, cache_dir=cache) as restarted:
        found = restarted.get_prompt(PROMPT, label="live")
        assert found.fallback and found.source == "last_known_good" and found.version == 1
        assert found.render(question="why?")[0]["content"] == "Answer why? briefly."
    # Without a last known good version, the failure is an error naming the server.
    with (
        MallardClient(own_server.url, keys["ingest"]) as empty,
        pytest.raises(PromptUnavailable) as raised,
    ):
        empty.get_prompt(PROMPT, label="live")
    assert own_server.url in str(raised.value) and "no last known good" in str(raised.value)


def test_refusals_are_errors_not_fallbacks(
    server: Server, keys: dict[str, str], prompt_world
) -> None:
    with MallardClient(server.url, keys["ingest"]) as client:
        with pytest.raises(PromptError) as missing:
            client.get_prompt("no_such_prompt")
        assert missing.value.status == 404 and missing.value.code == "unknown_prompt"
        assert not isinstance(missing.value, PromptUnavailable)
    with MallardClient(server.url, "mk_00000000_" + "A" * 43) as anonymous:
        with pytest.raises(PromptError) as refused:
            anonymous.get_prompt(PROMPT)
        assert refused.value.status == 401


def test_etag_round_trip_on_the_route(server: Server, keys: dict[str, str], prompt_world) -> None:
    """What the SDK relies on: the ETag names the version, If-None-Match gives 304."""
    import httpx

    headers = {"Authorization": f"Bearer {keys['viewer']}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        live = http.get(f"/v1/prompts/{PROMPT}")
        etag = live.headers["etag"]
        assert f"{PROMPT}-v1-" in etag
        again = http.get(f"/v1/prompts/{PROMPT}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        other = http.get(
            f"/v1/prompts/{PROMPT}", params={"version": 2}, headers={"If-None-Match": etag}
        )
        assert other.status_code == 200 and other.headers["etag"] != etag


def test_a_server_error_or_a_timeout_falls_back_too() -> None:
    import httpx

    answers = iter(["ok", "503", "timeout", "304"])
    body = {
        "name": PROMPT,
        "version": 3,
        "label": "live",
        "content_hash": "abc",
        "content": {"messages": [["user", "hi {{who}}"]], "variables": ["who"]},
        "variables": ["who"],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer == "ok":
            return httpx.Response(200, json=body, headers={"ETag": '"p-v3"'})
        if answer == "503":
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}})
        if answer == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        assert request.headers["if-none-match"] == '"p-v3"'
        return httpx.Response(304, headers={"ETag": '"p-v3"'})

    client = MallardClient(
        "http://127.0.0.1:9", "k", ttl_s=0, transport=httpx.MockTransport(handler)
    )
    assert client.get_prompt(PROMPT).source == "server"
    assert client.refresh(PROMPT).error == "HTTP 503 from http://127.0.0.1:9/v1/prompts/sdk_prompt"
    timed_out = client.refresh(PROMPT)
    assert timed_out.fallback and "ReadTimeout" in (timed_out.error or "")
    recovered = client.refresh(PROMPT)  # a 304: the version held is good again
    assert recovered.source == "server" and not recovered.fallback and recovered.version == 3
    client.close()
