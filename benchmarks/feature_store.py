"""Feature-store benchmark: Mallard's point-in-time engine and online store against Feast 0.67.

Data (FACTS.md, Feast section): 3 feature views x 5 float64 features, keys 1..100k, event and
created timestamps at second resolution over 30 days, 1 % extra rows repeating a (key, event
timestamp) with a later created timestamp and new values; entity tables unique on
(key, timestamp), 1 % exactly on a feature timestamp and 1 % exactly ttl after one; ttl 2 days.
The views are written with Mallard's offline writer (one Delta partition per day; the write
time is reported), and both engines start from those Delta tables.

Each engine runs in a subprocess of its own (Feast in its own venv, built from
benchmarks/feast/requirements.txt), so times and peak memory are whole-process figures; every
cell of the two results is compared.

    python benchmarks/feature_store.py                 # the three sizes of the issue
    python benchmarks/feature_store.py --sizes small   # a quick CI-sized run
    python benchmarks/feature_store.py --sizes 200000:1000000 --skip-feast
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_KEYS = 100_000
DAYS = 30
FEATURES = 5
VIEWS = 3
TTL = dt.timedelta(days=2)
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SIZES = {
    "small": [(50_000, 300_000)],
    "full": [(1_000_000, 1_000_000), (100_000, 10_000_000), (1_000_000, 10_000_000)],
}
FEAST_REQUIREMENTS = ROOT / "benchmarks" / "feast" / "requirements.txt"
FEAST_RUNNER = ROOT / "benchmarks" / "feast" / "run_feast.py"


def view_names() -> list[str]:
    return [f"fv{v}" for v in range(VIEWS)]


def feature_names(view: str) -> list[str]:
    return [f"{view}_f{i}" for i in range(FEATURES)]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def generate_view(rows: int, seed: int):
    """One view's rows as numpy arrays: unique (key, event ts) plus 1 % later-created repeats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rows - rows // 100
    span = DAYS * 86_400
    # Draw a few more than needed and drop repeated (key, second) pairs.
    keys = rng.integers(1, N_KEYS + 1, int(base * 1.01) + 10, dtype=np.int64)
    secs = rng.integers(0, span, keys.size, dtype=np.int64)
    combo = keys * span + secs
    _, first = np.unique(combo, return_index=True)
    first = np.sort(first)[:base]
    keys, secs = keys[first], secs[first]
    created = secs + rng.integers(0, 3_600, base)
    values = rng.standard_normal((base, FEATURES))
    extra = rows - base
    pick = rng.choice(base, extra, replace=False)
    keys = np.concatenate([keys, keys[pick]])
    secs = np.concatenate([secs, secs[pick]])
    created = np.concatenate([created, created[pick] + rng.integers(1, 86_400, extra)])
    values = np.concatenate([values, rng.standard_normal((extra, FEATURES))])
    order = np.argsort(secs, kind="stable")
    return keys[order], secs[order], created[order], values[order]


def write_view(path: Path, view: str, rows: int, seed: int) -> dict:
    """Write one view through Mallard's offline writer, one partition per event day."""
    import numpy as np
    import pyarrow as pa

    from mallard.features.offline import write_view_partition

    keys, secs, created, values = generate_view(rows, seed)
    start_us = int(START.timestamp()) * 1_000_000
    ts = pa.timestamp("us", tz="UTC")
    day_of = secs // 86_400
    bounds = np.searchsorted(day_of, np.arange(DAYS + 1))
    started = time.perf_counter()
    for day in range(DAYS):
        lo, hi = bounds[day], bounds[day + 1]
        table = pa.table(
            {
                "customer_id": pa.array(keys[lo:hi]),
                "event_timestamp": pa.array(start_us + secs[lo:hi] * 1_000_000, pa.int64()).cast(
                    ts
                ),
                "created_timestamp": pa.array(
                    start_us + created[lo:hi] * 1_000_000, pa.int64()
                ).cast(ts),
                **{name: pa.array(values[lo:hi, i]) for i, name in enumerate(feature_names(view))},
            }
        )
        write_view_partition(
            path, table, (START + dt.timedelta(days=day)).date(), join_keys=["customer_id"]
        )
    return {"view": view, "rows": rows, "seconds": time.perf_counter() - started}


def generate_entity(n: int, views_rows: int, seed: int):
    """Entity rows unique on (key, ts): 98 % random, 1 % on a feature ts, 1 % exactly ttl after one."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 1_000)
    keys_f, secs_f, _, _ = generate_view(views_rows, seed)  # view fv0's rows
    exact = n // 100
    pick = rng.choice(keys_f.size, 2 * exact, replace=False)
    ttl_s = int(TTL.total_seconds())
    keys = np.concatenate(
        [rng.integers(1, N_KEYS + 1, n - 2 * exact), keys_f[pick[:exact]], keys_f[pick[exact:]]]
    )
    secs = np.concatenate(
        [
            rng.integers(0, DAYS * 86_400, n - 2 * exact),
            secs_f[pick[:exact]],
            secs_f[pick[exact:]] + ttl_s,
        ]
    )
    frame = pd.DataFrame({"customer_id": keys, "secs": secs}).drop_duplicates(
        ["customer_id", "secs"]
    )
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame["event_timestamp"] = pd.to_datetime(START) + pd.to_timedelta(frame.pop("secs"), unit="s")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    return frame


def dataset(workdir: Path, rows: int, seed: int, log) -> tuple[list[dict], list[dict]]:
    """The views of one size (written once and reused) and their write times."""
    base = workdir / "data" / f"views_{rows}_seed{seed}"
    marker = base / "complete.json"
    views = [{"name": v, "path": str(base / v), "features": feature_names(v)} for v in view_names()]
    if marker.exists():
        return views, json.loads(marker.read_text())
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    writes = []
    for i, view in enumerate(view_names()):
        log(f"writing {view}: {rows:,} rows over {DAYS} daily partitions")
        writes.append(write_view(base / view, view, rows, seed + i))
        log(f"  {writes[-1]['seconds']:.1f} s")
    marker.write_text(json.dumps(writes))
    return views, writes


# --------------------------------------------------------------------------------------------
# Subprocess runners
# --------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM).

    Not getrusage's ru_maxrss: Linux carries the parent's high-water mark at fork across exec
    into a child's maxrss, so a child of a big benchmark process would report at least that.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # pragma: no cover

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[dict, float, float]:
    """Run a worker; its JSON line, wall seconds, and its own peak RSS (MiB, VmHWM)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out_chunks = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out_chunks.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{err[-4000:]}")
    result = json.loads([line for line in out_chunks if line.startswith("{")][-1])
    return result, wall, float(result.get("peak_rss_mb", usage.ru_maxrss / 1024))


def mallard_worker(args) -> None:
    """Subprocess: Mallard's engine on the entity table; writes the result, prints figures."""
    import pandas as pd

    from mallard.features.offline import ViewRead, get_historical_features

    views = [
        ViewRead(v["name"], v["path"], ["customer_id"], v["features"], TTL)
        for v in json.loads(args.views)
    ]
    entity = pd.read_parquet(args.entity)
    ready = time.perf_counter()
    result = get_historical_features(entity, views, plan=args.plan)
    seconds = time.perf_counter() - ready
    result.to_parquet(args.out, index=False)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "process_seconds": time.perf_counter() - PROCESS_STARTED,
                "peak_rss_mb": peak_rss_mb(),
                "rows": len(result),
                "views": result.attrs.get("mallard", []),
            }
        )
    )


def best(runs: list[dict]) -> dict:
    """Fastest in-process run's figures; whole-process time the fastest too; memory the highest."""
    fastest = min(runs, key=lambda r: r["seconds"])
    return {
        **fastest,
        "wall_seconds": min(r["wall_seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": len(runs),
    }


def ensure_feast_venv(venv: Path, log) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = FEAST_REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(
        f"building the Feast venv at {venv} (uv venv + uv pip install -r {FEAST_REQUIREMENTS.name})"
    )
    bootstrap = ROOT / ".bootstrap" / "bin" / "uv"  # where `make install` puts uv
    uv = shutil.which("uv") or (str(bootstrap) if bootstrap.exists() else None)
    if uv is None:
        raise RuntimeError("uv is needed to build the Feast venv (make install provides it)")
    if not python.exists():
        subprocess.run([uv, "venv", "-q", "--clear", "--python", "3.11", str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "-r", str(FEAST_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def compare(
    entity_path: Path, mallard_out: Path, feast_out: Path | None, features: list[str]
) -> dict:
    """Row order of Mallard's output, and every feature cell against Feast's."""
    import numpy as np
    import pandas as pd

    entity = pd.read_parquet(entity_path)
    mallard = pd.read_parquet(mallard_out)
    order_ok = bool(
        len(mallard) == len(entity)
        and (mallard["customer_id"].to_numpy() == entity["customer_id"].to_numpy()).all()
        and (mallard["event_timestamp"].to_numpy() == entity["event_timestamp"].to_numpy()).all()
    )
    out = {"order_kept": order_ok, "null_rate": float(mallard[features].isna().to_numpy().mean())}
    if feast_out is None:
        return out
    feast = pd.read_parquet(feast_out)

    def keyed(frame):
        frame = frame.copy()
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        return frame.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)

    a, b = keyed(mallard), keyed(feast)
    out["rows_mallard"], out["rows_feast"] = len(a), len(b)
    if len(a) != len(b) or not (a["customer_id"].to_numpy() == b["customer_id"].to_numpy()).all():
        out["cell_differences"] = None
        out["note"] = "row sets differ"
        return out
    diffs = 0
    for name in features:
        x = a[name].to_numpy(dtype="float64")
        y = b[name].to_numpy(dtype="float64")
        diffs += int((~((x == y) | (np.isnan(x) & np.isnan(y)))).sum())
    out["cells"] = len(a) * len(features)
    out["cell_differences"] = diffs
    return out


# --------------------------------------------------------------------------------------------
# Online store
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    import redis

    port = _free_port()
    (workdir / "redis").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir / "redis"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def percentiles(samples: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.array(samples) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def online_worker(args) -> None:
    """Subprocess: full load of the 3 views into an empty store, then timed reads."""
    import random

    from mallard.features.online import open_online_store
    from mallard.features.online.materialize import materialize_view

    views = json.loads(args.views)
    now = START + dt.timedelta(days=DAYS)
    requests = [(v["name"], v["features"], TTL) for v in views]
    results: dict = {}
    backends = [("sqlite", {"path": Path(args.out) / "online.sqlite"})]
    if args.redis_url:
        backends.append(("redis", {"url": args.redis_url, "prefix": "bench"}))
    for kind, options in backends:
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(options["path"]) + suffix).unlink(missing_ok=True)
        store = open_online_store(kind, **options)
        for v in views:
            store.delete_view(v["name"])
        started = time.perf_counter()
        loads = [
            materialize_view(store, v["name"], v["path"], ["customer_id"], v["features"])
            for v in views
        ]
        load_seconds = time.perf_counter() - started
        rng = random.Random(args.seed)
        one, hundred = [], []
        for _ in range(200):  # warm-up
            store.read([{"customer_id": rng.randint(1, N_KEYS)}], requests, now=now)
        for _ in range(args.online_reads):
            keys = [{"customer_id": rng.randint(1, N_KEYS)}]
            t0 = time.perf_counter()
            store.read(keys, requests, now=now)
            one.append(time.perf_counter() - t0)
        for _ in range(max(args.online_reads // 5, 100)):
            keys = [{"customer_id": rng.randint(1, N_KEYS)} for _ in range(100)]
            t0 = time.perf_counter()
            store.read(keys, requests, now=now)
            hundred.append(time.perf_counter() - t0)
        results[kind] = {
            "load_seconds": load_seconds,
            "load_read_seconds": sum(r.read_seconds for r in loads),
            "load_write_seconds": sum(r.write_seconds for r in loads),
            "keys_loaded": sum(r.rows_read for r in loads),
            "one_key_ms": percentiles(one),
            "hundred_keys_ms": percentiles(hundred),
        }
        store.close()
    print(json.dumps(results))


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

PROCESS_STARTED = time.perf_counter()


def parse_sizes(text: str) -> list[tuple[int, int]]:
    if text in SIZES:
        return SIZES[text]
    sizes = []
    for part in text.split(","):
        entity, rows = part.split(":")
        sizes.append((int(float(entity)), int(float(rows))))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="full", help="'full', 'small', or ENTITY:ROWS[,ENTITY:ROWS]"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="default MALLARD_HOME/bench/feature_store"
    )
    parser.add_argument(
        "--feast-venv", type=Path, default=None, help="default MALLARD_HOME/bench/feast-venv"
    )
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--skip-pit", action="store_true", help="only the online-store part")
    parser.add_argument("--online-reads", type=int, default=5_000)
    parser.add_argument("--plan", default="auto", choices=["auto", "asof", "hash", "merge"])
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per engine and size, alternating; the fastest counts (a shared machine is noisy)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--worker", choices=["mallard", "online"], help=argparse.SUPPRESS)
    parser.add_argument("--views", help=argparse.SUPPRESS)
    parser.add_argument("--entity", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "mallard":
        return mallard_worker(args)
    if args.worker == "online":
        return online_worker(args)

    from mallard.config import get_settings

    home = get_settings().home
    workdir = args.workdir or home / "bench" / "feature_store"
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MALLARD_HOME"] = str(home)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    feast_python = None
    if not args.skip_feast:
        feast_python = ensure_feast_venv(args.feast_venv or home / "bench" / "feast-venv", log)

    report: dict = {
        "seed": args.seed,
        "sizes": [],
        "writes": {},
        "online": None,
        "command": " ".join(sys.argv),
    }
    sizes = parse_sizes(args.sizes)
    for entity_rows, view_rows in [] if args.skip_pit else sizes:
        views, writes = dataset(workdir, view_rows, args.seed, log)
        report["writes"][view_rows] = writes
        entity_path = workdir / "data" / f"entity_{entity_rows}_{view_rows}_seed{args.seed}.parquet"
        if not entity_path.exists():
            generate_entity(entity_rows, view_rows, args.seed).to_parquet(entity_path, index=False)
        features = [f for v in views for f in v["features"]]
        label = f"{entity_rows:,} entity rows x {view_rows:,} rows/view"
        m_out = workdir / f"mallard_{entity_rows}_{view_rows}.parquet"
        f_out = workdir / f"feast_{entity_rows}_{view_rows}.parquet" if feast_python else None
        m_cmd = [
            sys.executable,
            __file__,
            "--worker",
            "mallard",
            "--views",
            json.dumps(views),
            "--entity",
            str(entity_path),
            "--out",
            str(m_out),
            "--plan",
            args.plan,
        ]
        f_cmd = [
            str(feast_python),
            str(FEAST_RUNNER),
            "--repo",
            str(workdir / "feast_repo"),
            "--views",
            json.dumps(views),
            "--entity",
            str(entity_path),
            "--out",
            str(f_out),
            "--ttl-seconds",
            str(int(TTL.total_seconds())),
        ]
        f_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        runs: dict[str, list[dict]] = {"mallard": [], "feast": []}
        feast_error = None
        for attempt in range(args.repeat):
            log(f"PIT join, {label}: Mallard (run {attempt + 1}/{args.repeat})")
            result, wall, rss = run_measured(m_cmd, env={**os.environ})
            runs["mallard"].append(
                {
                    **result,
                    "wall_seconds": wall,
                    "peak_rss_mb": rss,
                    "rusage_note": "peak_rss_mb is VmHWM",
                }
            )
            log(
                f"  {result['seconds']:.2f} s in-process, {wall:.2f} s whole process, {rss:,.0f} MiB peak"
            )
            if feast_python is None or feast_error:
                continue
            log(f"PIT join, {label}: Feast (run {attempt + 1}/{args.repeat})")
            shutil.rmtree(workdir / "feast_repo", ignore_errors=True)
            try:
                result, wall, rss = run_measured(f_cmd, env=f_env)
            except RuntimeError as exc:
                feast_error = str(exc)[-2000:]
                log(f"  Feast failed: {feast_error[-500:]}")
                continue
            runs["feast"].append(
                {
                    **result,
                    "wall_seconds": wall,
                    "peak_rss_mb": rss,
                    "rusage_note": "peak_rss_mb is VmHWM",
                }
            )
            log(
                f"  {result['seconds']:.2f} s in-process, {wall:.2f} s whole process, {rss:,.0f} MiB peak"
            )
        row = {
            "entity_rows": entity_rows,
            "view_rows": view_rows,
            "mallard": best(runs["mallard"]),
            "runs": runs,
        }
        if runs["feast"]:
            row["feast"] = best(runs["feast"])
        else:
            f_out = None
            if feast_error:
                row["feast"] = {"error": feast_error}
        row["check"] = compare(entity_path, m_out, f_out, features)
        log(f"  check: {row['check']}")
        report["sizes"].append(row)

    if not args.skip_online:
        views, _ = dataset(workdir, min(r for _, r in sizes), args.seed, log)
        log("online store: full load of 3 views x 100k keys, then reads")
        proc, url = start_redis(workdir)
        try:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "online",
                "--views",
                json.dumps(views),
                "--out",
                str(workdir),
                "--online-reads",
                str(args.online_reads),
            ]
            if url:
                cmd += ["--redis-url", url]
            online, _, _ = run_measured(cmd + ["--seed", str(args.seed)], env={**os.environ})
            report["online"] = online
            if feast_python is not None:
                log("online store: Feast (materialize into sqlite, then the same reads)")
                shutil.rmtree(workdir / "feast_repo_online", ignore_errors=True)
                feast_cmd = [
                    str(feast_python),
                    str(FEAST_RUNNER),
                    "--repo",
                    str(workdir / "feast_repo_online"),
                    "--views",
                    json.dumps(views),
                    "--ttl-seconds",
                    str(int(TTL.total_seconds())),
                    "--online-reads",
                    str(args.online_reads),
                    "--keys",
                    str(N_KEYS),
                    "--start",
                    (START - dt.timedelta(days=1)).isoformat(),
                    "--end",
                    (START + dt.timedelta(days=DAYS + 1)).isoformat(),
                    "--seed",
                    str(args.seed),
                ]
                try:
                    feast_online, _, _ = run_measured(
                        feast_cmd, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                    )
                    report["online_feast"] = feast_online
                except RuntimeError as exc:
                    log(f"  Feast online failed: {str(exc)[-500:]}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    report["load_average_end"] = os.getloadavg()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


def print_report(report: dict) -> None:
    print()
    print(
        f"Feature store benchmark (seed {report['seed']}; 3 views x 5 float64 features, ttl 2 days)"
    )
    print()
    for rows, writes in report["writes"].items():
        total = sum(w["seconds"] for w in writes)
        print(
            f"offline write, {int(rows):,} rows/view x 3 views (30 daily partitions each): {total:.1f} s"
        )
    print()
    header = (
        f"{'PIT join (entity x rows/view)':<30} {'Mallard s':>9} {'Feast s':>9} {'ratio':>6} "
        f"{'M proc s':>8} {'F proc s':>8} {'M RSS MiB':>9} {'F RSS MiB':>9} {'cell diffs':>10} {'order':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in report["sizes"]:
        m, f, c = row["mallard"], row.get("feast") or {}, row["check"]
        fs = f.get("seconds")
        ratio = f"{fs / m['seconds']:.1f}x" if fs else "-"
        f_seconds = f"{fs:.2f}" if fs else "-"
        f_wall = f"{f['wall_seconds']:.1f}" if fs else "-"
        f_rss = f"{f['peak_rss_mb']:,.0f}" if fs else "-"
        order = "yes" if c["order_kept"] else "NO"
        print(
            f"{row['entity_rows']:>12,} x {row['view_rows']:>12,}    {m['seconds']:>9.2f} "
            f"{f_seconds:>9} {ratio:>6} {m['wall_seconds']:>8.1f} {f_wall:>8} "
            f"{m['peak_rss_mb']:>9,.0f} {f_rss:>9} {str(c.get('cell_differences', '-')):>10} {order:>5}"
        )
    online = report.get("online")
    if online:
        print()
        print(
            f"{'online store':<10} {'full load 3x100k s':>18} {'1 key p50/p99 ms':>18} {'100 keys p50/p99 ms':>20}"
        )
        rows = dict(online)
        feast = report.get("online_feast")
        if feast:
            rows["feast sqlite"] = feast
        for kind, o in rows.items():
            print(
                f"{kind:<12} {o['load_seconds']:>16.2f} "
                f"{o['one_key_ms'][0]:>8.3f} / {o['one_key_ms'][1]:<7.3f} "
                f"{o['hundred_keys_ms'][0]:>8.2f} / {o['hundred_keys_ms'][1]:<8.2f}"
            )
        if feast and "sqlite" in online:
            m = online["sqlite"]
            print(
                "Feast / Mallard sqlite: full load "
                f"{feast['load_seconds'] / m['load_seconds']:.1f}x, 1 key p99 "
                f"{feast['one_key_ms'][1] / m['one_key_ms'][1]:.1f}x, 100 keys p99 "
                f"{feast['hundred_keys_ms'][1] / m['hundred_keys_ms'][1]:.1f}x"
            )
        else:
            print(
                "(no Feast run: FACTS.md measured Feast 0.67 on this kind of machine at 1 key "
                "0.9-1.2 / 1.7-3.7 ms, 100 keys 17-19 / 45 ms, full load 50 s)"
            )


if __name__ == "__main__":
    main()
