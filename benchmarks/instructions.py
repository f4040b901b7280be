"""Instructions a session costs, counted by valgrind's callgrind: the steady figure.

Run from the repository root (see benchmarks/README.md)::

    .venv/bin/python benchmarks/instructions.py           # 200 and 700 sessions a run
    .venv/bin/python benchmarks/instructions.py --check   # a CI smoke run, uncounted

Wall-clock ratios (``overhead.py``) follow the machine's other load; the
instructions a process executes do not. Each figure runs ``overhead.py``'s
sessions in a child process under callgrind twice, with a small and a large
number of sessions after the same warm-up, and divides the difference in
instructions by the difference in sessions: start-up, imports and warm-up
cancel out, and what remains is the cost of one more session, the
collector's and the event loop's share included. Figures:

- ``baseline``: the four requests of a session, bare ``asyncio.gather``;
- ``memory``: the ``Verifier`` on the ``MemoryStore`` making them
  (``overhead.py``'s figure 1);
- ``instant``: the same with channels that answer at once, no HTTP: the
  runtime alone;
- ``pure``: the decisions alone (``overhead.py``'s figure 1a): each session's
  recorded inputs fed to the pure core and the audit trail, with no event
  loop, store or channel; what every runtime of this design spends;
- ``sqlite``: figure 1 on a ``SqliteStore`` in a temporary file (callgrind
  runs one thread at a time, so fewer calls queue up to be batched than
  without it).

The runs are independent, so they go in parallel, one per core. Without
valgrind on the PATH the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from overhead import (
    APPLICANT,
    KINDS,
    Counter,
    HttpChannel,
    automatic_policy,
    in_batches,
    make_client,
    record,
    run_baseline,
    run_pure,
)

from multiverify import ChannelResult, Signal, Verifier
from multiverify.channels import Finished, StepContext, StepOutcome
from multiverify.stores import MemoryStore, SqliteStore

MODES = ("baseline", "memory", "instant", "pure", "sqlite")
BATCH = 100


class InstantChannel(HttpChannel):
    """``HttpChannel``'s answer without its request: the runtime's cost alone."""

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Finished(
            result=ChannelResult(
                status="passed",
                signals=tuple(Signal(name=name) for name in sorted(self.spec.signals)),
                score=0.9,
                provider="mock",
            )
        )


async def child(mode: str, warm: int, n: int) -> None:
    """Run ``warm`` sessions, then ``n`` more, of one figure (in the counted process)."""
    counter = Counter()
    async with make_client(counter) as client:
        if mode == "baseline":
            await run_baseline(client, warm, BATCH)
            await run_baseline(client, n, BATCH)
            expect = 4 * (warm + n)
        elif mode == "pure":
            recorded = await record(client)
            run_pure(recorded, warm)
            run_pure(recorded, n)
            expect = 4
        else:
            kind = InstantChannel if mode == "instant" else HttpChannel
            channels = [kind(name, client) for name in KINDS]
            with tempfile.TemporaryDirectory(prefix="mv-instr-") as tmp:
                store: Any = (
                    SqliteStore(os.path.join(tmp, "bench.db"))
                    if mode == "sqlite"
                    else MemoryStore()
                )
                async with Verifier(
                    automatic_policy(channels), channels=channels, store=store
                ) as verifier:

                    async def one(_: int) -> Any:
                        return await verifier.run(APPLICANT)

                    await in_batches(warm, BATCH, one)
                    verdicts = await in_batches(n, BATCH, one)
                    await verifier.wait_idle()
                await store.aclose()
            if any(v.outcome.value != "approved" for v in verdicts):
                raise RuntimeError("a session was not approved")
            expect = 0 if mode == "instant" else 4 * (warm + n)
    if counter.requests != expect:
        raise RuntimeError(f"expected {expect} HTTP requests, saw {counter.requests}")


def counted(valgrind: str, mode: str, warm: int, n: int) -> int:
    """The instructions one child run executes, all its threads."""
    with tempfile.TemporaryDirectory(prefix="mv-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                mode,
                str(warm),
                str(n),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{mode} run of {n} sessions failed:\n{done.stderr[-2000:]}"
            )
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction count in the {mode} run's output")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=100, help="warm-up sessions")
    parser.add_argument("--low", type=int, default=200, help="sessions, small run")
    parser.add_argument("--high", type=int, default=700, help="sessions, large run")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"which of {', '.join(MODES)}"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="CI smoke run: each figure's sessions once, uncounted (no valgrind)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, warm, n = args.child
        asyncio.run(child(mode, int(warm), int(n)))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"unknown modes: {', '.join(unknown) or '(none)'}")
    if args.high <= args.low:
        parser.error("--high must be more than --low")
    if args.check:
        for mode in modes:
            asyncio.run(child(mode, 2, 3))
            print(f"  {mode}: ran")
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not on the PATH: nothing counted")
        return 0

    runs = [(mode, n) for mode in modes for n in (args.low, args.high)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(
            zip(
                runs,
                pool.map(
                    lambda run: counted(valgrind, run[0], args.warm, run[1]), runs
                ),
                strict=True,
            )
        )
    sessions = args.high - args.low
    per = {
        mode: (totals[mode, args.high] - totals[mode, args.low]) / sessions
        for mode in modes
    }
    print(
        f"instructions per session (callgrind, {args.high} minus {args.low} "
        f"sessions after {args.warm}, PYTHONHASHSEED=0)"
    )
    base = per.get("baseline")
    for mode in modes:
        line = f"  {mode:<9} {per[mode] / 1e6:7.3f} M"
        if base and mode != "baseline":
            line += f"   {per[mode] / base:5.2f}x the baseline"
            if mode not in ("instant", "pure"):
                line += f" (overhead {(per[mode] - base) / 1e6:.3f} M)"
        print(line)
    if any(value <= 0 for value in per.values()):
        print("a larger run counted no more than a smaller one")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
