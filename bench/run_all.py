"""`make bench`: every benchmark in one run, a table of figures against the targets, and
`bench/results.json` with the machine they were measured on.

Each benchmark is its own module that prints one JSON object with `--json`; this runner only
starts them one after another (never two at once: they would measure each other), reads the
figures and compares them with the targets of the issue that set them.

`python -m bench.run_all [--quick] [--only NAME ...] [--out PATH]`
`--quick` shrinks every load (a smoke run of the harness; its figures are not the targets').
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


@dataclass
class Check:
    """One figure of a benchmark's JSON and its target (`None`: shown, not judged)."""

    label: str
    path: str  # dotted path into the benchmark's JSON
    unit: str
    target: str | None = None
    passes: Callable[[float], bool] | None = None


@dataclass
class Bench:
    name: str
    args: list[str]
    quick_args: list[str]
    checks: list[Check] = field(default_factory=list)
    needs_postgres: bool = False


POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "")


def benches() -> list[Bench]:
    items = [
        Bench(
            "cpu",
            ["-m", "bench.bench_cpu", "--json"],
            ["-m", "bench.bench_cpu", "--json", "--dialogues", "20", "--concurrency", "10"],
            [
                Check("bare aiogram, CPU per update", "bare.cpu_ms_per_update", "ms"),
                Check("Leadbot, CPU per update", "leadbot.cpu_ms_per_update", "ms"),
                Check("CPU ratio Leadbot / bare", "ratio", "x", "<= 1.5", lambda v: v <= 1.5),
                Check(
                    "start-up (to the first getUpdates)",
                    "leadbot.startup_seconds",
                    "s",
                    "<= 2",
                    lambda v: v <= 2.0,
                ),
                Check("bare aiogram start-up", "bare.startup_seconds", "s"),
                Check(
                    "resident memory after the load",
                    "leadbot.rss_mb",
                    "MB",
                    "<= 150",
                    lambda v: v <= 150,
                ),
                Check("bare aiogram resident memory", "bare.rss_mb", "MB"),
            ],
        ),
        Bench(
            "stack-floor",
            ["-m", "bench.bench_stack_floor", "--json"],
            ["-m", "bench.bench_stack_floor", "--json", "--steps", "200"],
            [
                Check("one answer's database work, async ORM", "orm_step_us", "us"),
                Check("the same through Core", "core_step_us", "us"),
                Check("the same SQL through sqlite3 alone", "sqlite3_step_us", "us"),
                Check("an update stored in the inbox", "inbox_store_us", "us"),
                Check("a session with one statement", "one_statement_session_us", "us"),
            ],
        ),
        Bench(
            "burst",
            ["-m", "bench.bench_burst", "--json"],
            ["-m", "bench.bench_burst", "--json", "--starts", "300"],
            [
                Check("burst: /start answered", "answered", ""),
                Check("burst: lost", "lost", "", "0", lambda v: v == 0),
                Check("burst: doubled", "doubled", "", "0", lambda v: v == 0),
                Check("burst: 429 answers", "too_many_requests", "", "0", lambda v: v == 0),
                Check("burst: last reply", "last_reply_seconds", "s"),
                Check(
                    "burst: last reply / 30-per-second floor",
                    "over_floor",
                    "x",
                    "<= 1.1",
                    lambda v: v <= 1.1,
                ),
                Check("burst: peak resident memory", "peak_rss_mb", "MB"),
            ],
        ),
        Bench(
            "isolation",
            ["-m", "bench.bench_isolation", "--json"],
            [
                "-m",
                "bench.bench_isolation",
                "--json",
                "--flood",
                "50",
                "--talkers",
                "50",
                "--payers",
                "5",
            ],
            [
                Check(f"isolation, {mode}: others' replies p50", f"{mode}.others_p50_seconds", "s")
                for mode in ("polling", "webhook")
            ]
            + [
                Check(
                    f"isolation, {mode}: others' replies p99",
                    f"{mode}.others_p99_seconds",
                    "s",
                    "<= 1.5",
                    lambda v: v <= 1.5,
                )
                for mode in ("polling", "webhook")
            ]
            + [
                Check(
                    f"isolation, {mode}: pre-checkout answer, longest",
                    f"{mode}.pre_checkout_max_seconds",
                    "s",
                    "<= 2",
                    lambda v: v <= 2.0,
                )
                for mode in ("polling", "webhook")
            ]
            + [
                Check(
                    f"isolation, {mode}: lost or doubled",
                    f"{mode}.lost",
                    "",
                    "0",
                    lambda v: v == 0,
                )
                for mode in ("polling", "webhook")
            ],
        ),
        Bench(
            "delivery",
            ["-m", "bench.bench_delivery", "--json"],
            ["-m", "bench.bench_delivery", "--json", "--touches", "200"],
            [
                Check(
                    "delivery: share of the configured rate",
                    "share",
                    "",
                    ">= 0.99",
                    lambda v: v >= 0.99,
                ),
                Check("delivery: 429 answers", "too_many_requests", "", "0", lambda v: v == 0),
            ],
        ),
        Bench(
            "delivery-shared",
            ["-m", "bench.bench_delivery_shared", "--json"],
            ["-m", "bench.bench_delivery_shared", "--json", "--touches", "200"],
            [
                Check("delivery, 2 instances: touches reached", "chats_reached", ""),
                Check("delivery, 2 instances: missing", "missing", "", "0", lambda v: v == 0),
                Check("delivery, 2 instances: doubled", "doubled", "", "0", lambda v: v == 0),
                Check(
                    "delivery, 2 instances: share of the configured rate",
                    "share",
                    "",
                    ">= 0.99",
                    lambda v: v >= 0.99,
                ),
                Check(
                    "delivery, 2 instances: 429 answers",
                    "too_many_requests",
                    "",
                    "0",
                    lambda v: v == 0,
                ),
                Check(
                    "delivery, 2 instances: the smaller one's share of the sends",
                    "smaller_instance_share",
                    "",
                    ">= 0.2",
                    lambda v: v >= 0.2,
                ),
                Check("delivery, 2 instances: busiest second", "busiest_second", ""),
            ],
        ),
    ]
    items += data_size_benches("", "SQLite")
    if POSTGRES_URL:
        items += data_size_benches(POSTGRES_URL, "PostgreSQL")
    return items


def data_size_benches(url: str, engine: str) -> list[Bench]:
    """The report and the idle tick as the data grows (10k, 100k, 1M leads, 5 events each):
    how each figure grows shows whether anything scans what the rollups should spare."""
    where = ["--database-url", url] if url else []
    key = engine.lower()
    items = []
    for leads, label in ((10_000, "10k"), (100_000, "100k"), (1_000_000, "1M")):
        args = ["-m", "bench.bench_report", "--json", "--leads", str(leads), *where]
        checks = [
            Check(
                f"{engine} {label}: all-time report",
                "best_s",
                "s",
                "<= 0.1" if leads == 1_000_000 else None,
                (lambda v: v <= 0.1) if leads == 1_000_000 else None,
            ),
        ]
        items.append(Bench(f"report-{key}-{label}", args, [*args[:4], "10000", *where], checks))
    month = ["-m", "bench.bench_report", "--json", "--leads", "1000000", "--period", "30d"]
    items.append(
        Bench(
            f"report-{key}-1M-30d",
            [*month, "--target", "0.5", *where],
            [*month[:4], "10000", "--period", "30d", *where],
            [Check(f"{engine} 1M: 30-day report", "best_s", "s", "<= 0.5", lambda v: v <= 0.5)],
        )
    )
    tick = ["-m", "bench.bench_tick", "--json", "--leads", "1000000"]
    tick_where = ["--database-url", url] if url else []
    items.append(
        Bench(
            f"tick-{key}-1M",
            [*tick, *tick_where],
            [*tick[:4], "10000", *tick_where],
            [
                Check(
                    f"{engine} 1M: idle tick (median)",
                    "median_ms",
                    "ms",
                    "<= 10",
                    lambda v: v <= 10,
                )
            ],
        )
    )
    return items


def dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part] if isinstance(data, dict) else None
    return data


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
    }


def run_one(bench: Bench, quick: bool) -> dict[str, Any]:
    args = bench.quick_args if quick else bench.args
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")])}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": (done.stderr or done.stdout).strip()[-2000:], "seconds": seconds}
    result: dict[str, Any] = json.loads(lines[-1])
    result["bench_seconds"] = round(seconds, 1)
    return result


def table(results: dict[str, dict[str, Any]], chosen: list[Bench]) -> tuple[list[str], bool]:
    rows = [("figure", "value", "target", "")]
    all_ok = True
    for bench in chosen:
        result = results.get(bench.name, {})
        if "error" in result:
            rows.append((f"{bench.name}: did not run", "-", "-", "FAIL"))
            all_ok = False
            continue
        if "skipped" in result:
            # A server it needs is not here (PostgreSQL, Redis): said, not failed.
            rows.append((f"{bench.name}: skipped ({result['skipped']})", "-", "-", "skip"))
            continue
        for check in bench.checks:
            value = dig(result, check.path)
            shown = "-" if value is None else f"{value:g} {check.unit}".strip()
            verdict = ""
            if check.passes is not None and value is not None:
                ok = bool(check.passes(float(value)))
                verdict = "ok" if ok else "MISS"
                all_ok = all_ok and ok
            rows.append((check.label, shown, check.target or "", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines, all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [b for b in benches() if args.only is None or b.name in args.only]
    results: dict[str, dict[str, Any]] = {}
    for bench in chosen:
        print(f"running {bench.name} ...", flush=True)
        results[bench.name] = run_one(bench, args.quick)
        if "error" in results[bench.name]:
            print(results[bench.name]["error"], file=sys.stderr)
    lines, all_ok = table(results, chosen)
    print("\n".join(lines))
    document = {"machine": machine(), "quick": args.quick, "results": results}
    args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"figures written to {args.out}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
