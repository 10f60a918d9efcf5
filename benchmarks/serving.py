"""Serving benchmarks over HTTP, with a bounded asyncio load generator (benchmarks/http_load.py).

    python benchmarks/serving.py features    # online features: Mallard's API vs Feast's feature server
    python benchmarks/serving.py predict     # predict over HTTP vs the same calls in-process
    python benchmarks/serving.py all

features — the feature-store benchmark's three views (benchmarks/feature_store.py: 5 float64
features each, keys 1..100k; written once under MALLARD_HOME/bench/feature_store), loaded into
Mallard's SQLite online store behind `mallard.serving` (one uvicorn worker, API key, rate
limits, metrics, JSON access log) and into Feast 0.67's SQLite online store behind
`feast serve` (gunicorn, one uvicorn worker, no access log, no worker recycling), in the Feast
venv the feature-store benchmark builds. Both answer the same 15 features for the same keys (the
values are compared). Closed loop: p50/p99 for 1 key and for 100 keys. Open loop stepped up:
the highest rate each sustains with p99 under 20 ms. Goal: Mallard ≥ 3× Feast's rate.

predict — the serving tests' world (a scikit-learn churn model registered in MLflow with its
training statistics and out-of-distribution forest) built under MALLARD_HOME/bench/serving,
served by `mallard serve`'s own app (cli.serve.build_app: key, rate limits, validation in warn
mode, the prediction log's fsynced buffer). p50/p99 for 1 row and for 100 rows over HTTP against
the same model and validation called in-process (ModelService.inputs, .check, .predict: the
ceiling), and what in the ceiling costs most. Goal: HTTP adds at most 5 ms at p99.

Every request goes to 127.0.0.1; every loop is bounded in requests and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import feature_store as fs  # noqa: E402
from http_load import Request, StepUp, closed_loop, run, step_up  # noqa: E402

P99_LIMIT_MS = 20.0
MODEL = "churn_classifier"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    return fs._free_port()


class Process:
    """A server subprocess on 127.0.0.1, its output in a log file; stopped by `stop`."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path
    ):
        self.name = name
        self.log_path = log_path
        handle = log_path.open("w")
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()

    def wait(self, url: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready at {url}:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLARD_")}
    env.update(
        {
            "MALLARD_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "MALLARD_RATE_LIMIT_ADDRESS_PER_S": "1000000",
            "MALLARD_RATE_LIMIT_ADDRESS_BURST": "1000000",
            "MALLARD_RATE_LIMIT_KEY_PER_S": "1000000",
            "MALLARD_RATE_LIMIT_KEY_BURST": "1000000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def make_key(home: Path, role: str) -> str:
    from mallard.config import load_settings
    from mallard.serving.state import open_server_state

    settings = load_settings(home=home)
    settings.ensure_home()
    state = open_server_state(settings)
    try:
        return state.create_key(
            f"bench-{role}", role, actor="benchmarks", rate_per_s=1e6, burst=1_000_000
        ).key
    finally:
        state.close()


def ms(result) -> dict[str, float]:
    return {"p50": round(result.p50, 3), "p99": round(result.p99, 3), "n": result.completed}


# ------------------------------------------------------------------------------------------------
# Online features: Mallard vs Feast
# ------------------------------------------------------------------------------------------------


def mallard_store(views: list[dict], path: Path) -> float:
    """Load the views into a fresh SQLite online store; seconds."""
    from mallard.features.online import open_online_store
    from mallard.features.online.materialize import materialize_view

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = open_online_store("sqlite", path=path)
    started = time.perf_counter()
    for v in views:
        materialize_view(store, v["name"], v["path"], ["customer_id"], v["features"])
    store.close()
    return time.perf_counter() - started


def feast_repo(views: list[dict], repo: Path, feast_python: Path) -> dict:
    shutil.rmtree(repo, ignore_errors=True)
    command = [
        str(feast_python),
        str(HERE / "feast" / "serve_feast.py"),
        "--repo",
        str(repo),
        "--views",
        json.dumps(views),
        "--start",
        (fs.START - fs.dt.timedelta(days=1)).isoformat(),
        "--end",
        (fs.START + fs.dt.timedelta(days=fs.DAYS + 1)).isoformat(),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result, _, _ = fs.run_measured(command, env=env)
    return result


def bodies(kind: str, n_keys: int, count: int, refs: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        keys = [rng.randint(1, fs.N_KEYS) for _ in range(n_keys)]
        if kind == "mallard":
            body = {"entities": [{"customer_id": k} for k in keys], "features": refs}
        else:
            body = {"features": refs, "entities": {"customer_id": keys}}
        out.append(json.dumps(body).encode())
    return out


def same_values(mallard_url: str, feast_url: str, key: str, refs: list[str], seed: int) -> dict:
    """Both servers' answers for the same 300 keys, cell by cell."""
    import math

    rng = random.Random(seed + 99)
    cells = differences = 0
    present = 0
    for _ in range(3):
        keys = [rng.randint(1, fs.N_KEYS) for _ in range(100)]
        m = httpx.post(
            f"{mallard_url}/v1/features/online",
            json={"entities": [{"customer_id": k} for k in keys], "features": refs},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ).json()
        f = httpx.post(
            f"{feast_url}/get-online-features",
            json={"features": refs, "entities": {"customer_id": keys}},
            timeout=30,
        ).json()
        names = f["metadata"]["feature_names"]
        columns = {name: f["results"][j]["values"] for j, name in enumerate(names)}
        for i, row in enumerate(m["rows"]):
            for name, value in row["values"].items():
                other = columns[name][i]
                cells += 1
                if value is not None:
                    present += 1
                same = (value is None and other is None) or (
                    value is not None
                    and other is not None
                    and math.isclose(float(value), float(other), rel_tol=0, abs_tol=0)
                )
                differences += not same
    return {"cells": cells, "present": present, "differences": differences}


def run_features(args, report: dict) -> None:
    from mallard.config import get_settings

    home = get_settings().home
    bench = home / "bench"
    workdir = bench / "serving" / "features"
    workdir.mkdir(parents=True, exist_ok=True)
    views, _ = fs.dataset(bench / "feature_store", args.rows, args.seed, log)
    refs = [f"{v['name']}:{f}" for v in views for f in v["features"]]
    log(f"Mallard online store: loading 3 views of {args.rows:,} rows (keys 1..{fs.N_KEYS:,})")
    load_s = mallard_store(views, workdir / "online.sqlite")
    log(f"  {load_s:.1f} s")
    server_home = workdir / "home"
    key = make_key(server_home, "viewer")
    config = workdir / "app.json"
    config.write_text(
        json.dumps(
            {"home": str(server_home), "store": str(workdir / "online.sqlite"), "views": views}
        )
    )
    servers: list[Process] = []
    try:
        m_port = free_port()
        mallard = Process(
            "mallard",
            [sys.executable, str(HERE / "serving_app.py"), "features", str(config), str(m_port)],
            server_env(server_home),
            ROOT,
            workdir / "mallard.log",
        )
        servers.append(mallard)
        m_url = f"http://127.0.0.1:{m_port}"
        mallard.wait(m_url + "/healthz")
        feast_url = None
        if not args.skip_feast:
            feast_python = fs.ensure_feast_venv(args.feast_venv or bench / "feast-venv", log)
            log("Feast: repository over the same Delta tables, materialize into SQLite")
            built = feast_repo(views, workdir / "feast_repo", feast_python)
            log(f"  {built['materialize_seconds']:.1f} s (Feast {built['feast']})")
            f_port = free_port()
            feast = Process(
                "feast serve",
                [
                    str(feast_python.parent / "feast"),
                    "-c",
                    str(workdir / "feast_repo"),
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(f_port),
                    "-w",
                    "1",
                    "--no-access-log",
                    "--max-requests",
                    "0",
                ],
                {k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                workdir,
                workdir / "feast.log",
            )
            servers.append(feast)
            feast_url = f"http://127.0.0.1:{f_port}"
            feast.wait(feast_url + "/health")
            check = same_values(m_url, feast_url, key, refs, args.seed)
            log(f"same data: {check}")
            report["features_check"] = check
            report["feast_materialize_s"] = built["materialize_seconds"]
        report["mallard_load_s"] = load_s
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        targets: dict[str, tuple[str, str, dict[str, str]]] = {
            "mallard": (m_url, "/v1/features/online", headers)
        }
        if feast_url:
            targets["feast"] = (
                feast_url,
                "/get-online-features",
                {"content-type": "application/json"},
            )
        latency: dict[str, dict] = {}
        for n_keys, count in ((1, args.reads), (100, max(args.reads // 5, 200))):
            for name, (url, path, h) in targets.items():
                requests = [
                    Request("POST", path, b, h)
                    for b in bodies(name, n_keys, 500, refs, args.seed + n_keys)
                ]
                result = run(closed_loop(url, requests, count))
                latency.setdefault(name, {})[f"{n_keys}_key"] = ms(result)
                log(
                    f"closed loop, {n_keys:>3} key(s), {name:7}: p50 {result.p50:7.3f} ms  "
                    f"p99 {result.p99:7.3f} ms  ({result.completed} requests, "
                    f"{result.errors} errors)"
                )
        report["features_latency"] = latency
        sustained: dict[str, dict] = {name: {"rounds": []} for name in targets}
        for round_ in range(args.rounds):  # the servers take turns: the machine's load is shared
            for name, (url, path, h) in targets.items():
                log(
                    f"open loop stepped up, 1 key, {name}, round {round_ + 1}/{args.rounds} "
                    f"(p99 limit {P99_LIMIT_MS:g} ms)"
                )
                requests = [
                    Request("POST", path, b, h) for b in bodies(name, 1, 2000, refs, args.seed + 7)
                ]
                result: StepUp = run(
                    step_up(
                        url,
                        requests,
                        p99_limit_ms=P99_LIMIT_MS,
                        start_rate=args.start_rate,
                        step_seconds=args.step_seconds,
                        max_requests=args.max_requests,
                        max_seconds=args.max_seconds,
                        log=log,
                    )
                )
                best = result.best
                sustained[name]["rounds"].append(
                    {
                        "rate": result.sustained_rate,
                        "at": best.summary() if best else None,
                        "steps": [s.summary() for s in result.steps],
                    }
                )
                log(f"  {name}: sustained {result.sustained_rate:.0f} requests/s with p99 < 20 ms")
        for found in sustained.values():
            found["rate"] = max(r["rate"] for r in found["rounds"])
        report["features_sustained"] = sustained
    finally:
        for server in servers:
            server.stop()


# ------------------------------------------------------------------------------------------------
# Predict: HTTP vs in-process
# ------------------------------------------------------------------------------------------------


def predict_world(workdir: Path) -> tuple[Path, dict, list[dict]]:
    """The serving tests' world (built once), a clean row and 100 rows of the latest day."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "tests" / "serving"))
    from world import build_world

    home = workdir / "home"
    marker = workdir / "world.json"
    if not marker.exists():
        shutil.rmtree(home, ignore_errors=True)
        log(f"building the serving world under {home}")
        world = build_world(home)
        marker.write_text(json.dumps({"sample_row": world.sample_row, "features": world.features}))
    data = json.loads(marker.read_text())
    frame = pd.read_parquet(home / "world_training_rows.parquet")
    latest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    latest = latest.dropna(subset=["minutes_7d"]).head(100)
    rows = []
    for record in latest[data["features"]].to_dict("records"):
        rows.append(
            {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}
        )
    return home, data["sample_row"], rows


def in_process(home: Path, row_sets: list[list[dict]], n: int, warmup: int = 30) -> dict[str, Any]:
    """The route's work without HTTP: inputs, checks and predictions, and each part's cost."""
    import dataclasses

    import numpy as np

    from mallard.config import load_settings
    from mallard.monitoring.scoring import _preprocessed
    from mallard.serving.app import settle_heap
    from mallard.serving.metrics import ServerMetrics
    from mallard.serving.models import ModelService, ServedModel, finite
    from mallard.serving.validation import check_rows

    settings = load_settings(home=home)
    served = ServedModel(MODEL, "classification", "warn", "churn_features")
    service = ModelService(settings, {MODEL: served}, registry=None, online_store=None)
    metrics = ServerMetrics()

    def once(rows: list[dict]) -> None:
        version = service.resolve(MODEL, None, None).version
        inputs = service.inputs(served, version, rows, None)
        service.check(served, version, inputs, metrics, "rows")
        service.predict(version, inputs.frame)

    for i in range(warmup):
        once(row_sets[i % len(row_sets)])
    settle_heap()  # as the server does once its models are loaded
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        once(row_sets[i % len(row_sets)])
        times.append((time.perf_counter() - t0) * 1000)
    # Where the time goes, part by part (p50 over the same row sets).
    version = service.resolve(MODEL, None, None).version
    model = version.model
    rules_only = dataclasses.replace(version.stats, detector=None)
    parts: dict[str, list[float]] = {}

    def timed(name: str, fn, *args) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        parts.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    estimator = model.pipeline.steps[-1][-1]
    detector = version.stats.detector
    for i in range(min(n, 300)):
        rows = row_sets[i % len(row_sets)]
        inputs = timed("request rows → typed frame", service.inputs, served, version, rows, None)
        timed("range/null/category rules", rules_only.check, inputs.frame)
        timed("out-of-distribution forest (100 trees)", detector.scores, inputs.frame)
        x = timed("model.frame (conform_features)", model.frame, finite(inputs.frame))
        xt = timed("pipeline preprocessing", _preprocessed, model.pipeline, x)[0]
        timed("estimator predict", estimator.predict, xt)
        timed("estimator predict_proba", estimator.predict_proba, xt)
        timed("all checks (check_rows)", check_rows, inputs.frame, version.stats, inputs.nan)
    arr = np.array(times)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "n": n,
        "parts_p50_ms": {k: round(float(np.percentile(v, 50)), 3) for k, v in parts.items()},
    }


def run_predict(args, report: dict) -> None:
    from mallard.config import get_settings

    workdir = get_settings().home / "bench" / "serving" / "predict"
    workdir.mkdir(parents=True, exist_ok=True)
    home, sample_row, rows = predict_world(workdir)
    key = make_key(home, "developer")
    port = free_port()
    server = Process(
        "mallard serve",
        [sys.executable, str(HERE / "serving_app.py"), "predict", str(port)],
        server_env(home),
        ROOT,
        workdir / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    one_row_sets = [[r] for r in rows]
    hundred = [rows]
    try:
        server.wait(url + "/readyz")
        http: dict[str, dict] = {}
        for label, sets, count in (
            ("1_row", one_row_sets, args.reads),
            ("100_rows", hundred, max(args.reads // 4, 200)),
        ):
            requests = [
                Request(
                    "POST", f"/v1/models/{MODEL}/predict", json.dumps({"rows": s}).encode(), headers
                )
                for s in sets
            ]
            result = run(closed_loop(url, requests, count))
            assert result.errors == 0, result.statuses
            http[label] = ms(result)
            log(f"HTTP predict, {label:8}: p50 {result.p50:7.3f} ms  p99 {result.p99:7.3f} ms")
        probes = {}
        for path in ("/healthz", "/v1/whoami"):
            result = run(closed_loop(url, [Request("GET", path, None, headers)], 1000))
            probes[path] = ms(result)
            log(f"HTTP {path:10}: p50 {result.p50:7.3f} ms  p99 {result.p99:7.3f} ms")
    finally:
        server.stop()
    ceiling: dict[str, dict] = {}
    for label, sets, count in (
        ("1_row", one_row_sets, args.reads),
        ("100_rows", hundred, max(args.reads // 4, 200)),
    ):
        ceiling[label] = in_process(home, sets, count)
        log(
            f"in-process, {label:8}: p50 {ceiling[label]['p50']:7.3f} ms  p99 {ceiling[label]['p99']:7.3f} ms"
        )
        for part, value in ceiling[label]["parts_p50_ms"].items():
            log(f"    {part:40} {value:7.3f} ms")
    report["predict_http"] = http
    report["predict_probes"] = probes
    report["predict_ceiling"] = ceiling


# ------------------------------------------------------------------------------------------------


def print_report(report: dict) -> None:
    print()
    latency = report.get("features_latency")
    if latency:
        print(
            "Online features over HTTP (3 views x 5 float64 features, SQLite online stores, 1 worker)"
        )
        print(
            f"{'server':<22} {'1 key p50 / p99 ms':>20} {'100 keys p50 / p99 ms':>23} {'sustained req/s (p99 < 20 ms)':>31}"
        )
        for name, label in (("mallard", "Mallard API"), ("feast", "Feast feature server")):
            if name not in latency:
                continue
            one, hundred = latency[name]["1_key"], latency[name]["100_key"]
            rate = report["features_sustained"][name]["rate"]
            print(
                f"{label:<22} {one['p50']:>9.2f} / {one['p99']:<8.2f} {hundred['p50']:>10.2f} / "
                f"{hundred['p99']:<9.2f} {rate:>20.0f}"
            )
        if "feast" in latency:
            m, f = (
                report["features_sustained"]["mallard"]["rate"],
                report["features_sustained"]["feast"]["rate"],
            )
            ratio = m / f if f else float("inf")
            print(
                f"sustained rate Mallard / Feast: {ratio:.1f}x (goal ≥ 3x: {'met' if ratio >= 3 else 'NOT met'}); "
                f"1 key p99 Feast / Mallard {latency['feast']['1_key']['p99'] / latency['mallard']['1_key']['p99']:.1f}x, "
                f"100 keys p99 {latency['feast']['100_key']['p99'] / latency['mallard']['100_key']['p99']:.1f}x"
            )
            print(f"same values: {report['features_check']}")
    http = report.get("predict_http")
    if http:
        print()
        print(
            "Predict, churn model (warn), validation and auth over HTTP vs the same calls in-process"
        )
        print(
            f"{'rows':<10} {'HTTP p50 / p99 ms':>20} {'in-process p50 / p99 ms':>26} {'added at p99 ms':>16}"
        )
        worst = 0.0
        for label in ("1_row", "100_rows"):
            h, c = http[label], report["predict_ceiling"][label]
            added = h["p99"] - c["p99"]
            worst = max(worst, added)
            print(
                f"{label:<10} {h['p50']:>9.2f} / {h['p99']:<8.2f} {c['p50']:>12.2f} / {c['p99']:<10.2f} {added:>+12.2f}"
            )
        print(
            f"HTTP adds at most {worst:+.2f} ms at p99 (goal ≤ 5 ms: {'met' if worst <= 5 else 'NOT met'})"
        )
        for label in ("1_row", "100_rows"):
            parts = report["predict_ceiling"][label]["parts_p50_ms"]
            ranked = sorted(parts.items(), key=lambda kv: -kv[1])
            print(
                f"ceiling, {label}, p50 by part: " + "; ".join(f"{k} {v:.2f} ms" for k, v in ranked)
            )
        probes = report["predict_probes"]
        print(
            f"probes: /healthz p50 {probes['/healthz']['p50']:.2f} / p99 {probes['/healthz']['p99']:.2f} ms, "
            f"/v1/whoami (key + buckets) p50 {probes['/v1/whoami']['p50']:.2f} / p99 {probes['/v1/whoami']['p99']:.2f} ms"
        )
    print(f"load average at the end: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["features", "predict", "all"])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows per view (feature_store data)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--reads", type=int, default=2_000, help="closed-loop requests (1 key / 1 row)"
    )
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--feast-venv", type=Path, default=None)
    parser.add_argument("--start-rate", type=float, default=50.0)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="stepped-up runs per server, in turns"
    )
    parser.add_argument("--max-requests", type=int, default=120_000, help="per stepped-up run")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="per stepped-up run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    # A SIGTERM (a timeout, Ctrl-C in make) unwinds like an exception, so the servers it started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict = {"command": " ".join(sys.argv), "load_average_start": os.getloadavg()}
    if args.what in ("features", "all"):
        run_features(args, report)
    if args.what in ("predict", "all"):
        run_predict(args, report)
    report["load_average_end"] = os.getloadavg()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
