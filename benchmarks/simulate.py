"""How fast ``multiverify simulate`` re-decides recorded sessions.

Run from the repository root (see benchmarks/README.md)::

    .venv/bin/python benchmarks/simulate.py            # 100,000 sessions
    .venv/bin/python benchmarks/simulate.py --quick    # a CI smoke run, the shipped 1000 sessions

The sessions come from ``scripts/make_backtest_dataset.py`` (fixed seed),
written once to the temporary directory and reused. Figures, all on the same
file in the same run:

0. Baseline: reading the file and parsing every line as JSON, the floor any
   replay pays.
1. ``simulate_file`` under the proposed policy, in this process.
2. The same with the default worker processes (one per core).
3. The proposed policy against the current one as a baseline, with labels
   and the default workers: what ``multiverify simulate --baseline ...
   --labels ...`` does. **Goal: under 60 s for 100,000 sessions.**

Wall times with ``time.perf_counter`` and CPU seconds (this process and its
workers, from ``getrusage``); the machine's other load (printed) shows up in
the wall times, much less in the CPU seconds. A missed goal prints MISS and does not change the exit
status; a run whose report does not add up to the sessions it read exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from multiverify.backtest import load_labels, simulate_file
from multiverify.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "backtest"
GOAL_SECONDS = 60.0


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_backtest_dataset", ROOT / "scripts" / "make_backtest_dataset.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset(count: int) -> tuple[Path, Path]:
    """The sessions and labels files for ``count`` sessions (made once, then reused)."""
    if count == 1000:
        return DATA / "sessions.jsonl", DATA / "labels.csv"
    folder = Path(tempfile.gettempdir()) / f"multiverify-backtest-{count}"
    sessions, labels = folder / "sessions.jsonl", folder / "labels.csv"
    if not sessions.exists() or not labels.exists():
        print(f"writing {count} sessions to {folder} (once) ...", flush=True)
        lines, rows = _generator().generate(count)
        folder.mkdir(parents=True, exist_ok=True)
        sessions.write_text("\n".join(lines) + "\n", encoding="utf-8")
        labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return sessions, labels


def cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def timed(name: str, work: Any) -> tuple[float, float, Any]:
    start, used = time.perf_counter(), cpu()
    result = work()
    seconds, busy = time.perf_counter() - start, cpu() - used
    print(f"{name:<58} {seconds:8.2f} s wall {busy:8.2f} s CPU", flush=True)
    return seconds, busy, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--quick", action="store_true", help="the shipped 1000 sessions"
    )
    args = parser.parse_args()
    count = 1000 if args.quick else args.sessions
    sessions, labels_file = dataset(count)
    proposed = load_policy(DATA / "proposed.toml")
    current = load_policy(DATA / "current.toml")
    labels = load_labels(labels_file)
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    print(
        f"{count} sessions, {cores} cores, Python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    floor, _, _ = timed(
        "0. baseline: read and parse every line as JSON",
        lambda: [json.loads(line) for line in sessions.open(encoding="utf-8")],
    )
    alone, _, one = timed(
        "1. simulate, proposed policy, in this process",
        lambda: simulate_file(proposed, sessions, workers=1),
    )
    default_workers = (
        None if count >= 5000 else 2
    )  # the pool is skipped for small files
    pooled, _, two = timed(
        "2. simulate, proposed policy, worker processes",
        lambda: simulate_file(proposed, sessions, workers=default_workers),
    )
    full, full_cpu, both = timed(
        "3. simulate, proposed vs current, labels, worker processes",
        lambda: simulate_file(
            proposed, sessions, baseline=current, labels=labels, workers=default_workers
        ),
    )
    for report in (one, two, both):
        if report.sessions != count or sum(report.policy.outcomes.values()) != count:
            print(f"FAIL: a report covers {report.sessions} of {count} sessions")
            return 1
    if one.to_json() != two.to_json():
        print("FAIL: worker processes and one process disagree")
        return 1
    print(
        f"per session: {1e6 * alone / count:.0f} us alone, {1e6 * pooled / count:.0f} us "
        f"pooled, {1e6 * full / count:.0f} us with the baseline; "
        f"{alone / floor:.1f}x the JSON floor in one process"
    )
    print(f"changed verdicts: {len(both.changes)}; pool speed-up {alone / pooled:.2f}x")
    if count >= 100_000:
        scaled = full * 100_000 / count
        verdict = "OK" if scaled < GOAL_SECONDS else "MISS"
        print(
            f"goal: 100,000 sessions against a baseline < {GOAL_SECONDS:g} s: "
            f"{scaled:.1f} s wall {verdict}; its {full_cpu:.1f} CPU seconds take "
            f"{full_cpu / (cores or 1):.1f} s on {cores} idle cores"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
