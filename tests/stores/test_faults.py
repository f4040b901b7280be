"""Proof under faults: worker processes that die at the worst moments lose nothing and repeat nothing.

Real processes (``multiverify worker``) on a real PostgreSQL or Redis share
200 sessions of ``faultapp``: a report pull, then an SMS code through the
Twilio provider, against a fake vendor on loopback that counts every send
and every billed pull. One replica SIGKILLs itself at random points (see
``faultapp``) and is restarted, as an orchestrator would; the test process
is a third replica that types the codes the applicants received.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakevendor import FakeVendor
from faultapp import POLICY, channels, phone, session_id

from multiverify import Outcome, Verifier
from multiverify.exceptions import (
    ConcurrentUpdateError,
    SessionFinishedError,
    StepNotWaitingError,
)
from multiverify.stores import store_from_url

HERE = Path(__file__).parent
SESSIONS = 200
KILL_POINTS = ("after_save", "during_effect", "after_effect")
DEADLINE = 90.0  # seconds for every session to be decided

CLI = "import sys; from multiverify._cli import main; main(sys.argv[1:])"


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    """The fake vendor, serving on loopback."""
    made = FakeVendor()
    made.start()
    yield made
    made.stop()


def cli(
    logs: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``multiverify ARGS`` in a process of its own, run from this directory.

    Its output goes to a new file in ``logs``.
    """
    log = logs / f"process-{len(list(logs.iterdir()))}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-c", CLI, *args],
            cwd=HERE,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    LOGS[process.pid] = log
    return process


# Each process's log file, by pid, for the message of a process that did not exit.
LOGS: dict[int, Path] = {}


def worker(
    logs: Path, store: str, vendor: FakeVendor, **env: str
) -> subprocess.Popen[bytes]:
    """A worker replica of ``faultapp``."""
    return cli(
        logs,
        "worker",
        "--store",
        store,
        "--app",
        "faultapp:build",
        "--poll-interval",
        "0.2",
        # Room for clock skew past a claim's end (the processes share a clock,
        # so this only delays the take-over of a killed replica's effects).
        "--effect-grace",
        "5",
        "--concurrency",
        "16",
        # Resumed effects get 2 s to finish on SIGTERM: the whole stop is
        # then bounded by 12 s, well inside the test's wait for the exit.
        "--stop-grace",
        "2",
        env={"FAULT_VENDOR": vendor.url, **env},
    )


async def exited(process: subprocess.Popen[bytes], within: float) -> int:
    """The process's exit code, once it exits (failing after ``within`` seconds)."""
    end = time.monotonic() + within
    while process.poll() is None:
        if time.monotonic() >= end:
            log = LOGS.get(process.pid)
            tail = log.read_text().splitlines()[-30:] if log is not None else []
            raise AssertionError(
                f"process {process.pid} did not exit within {within}s; its log ends:\n"
                + "\n".join(tail)
            )
        await asyncio.sleep(0.05)
    return process.returncode


async def type_codes(verifier: Verifier, vendor: FakeVendor) -> dict[str, Outcome]:
    """Type the code each even-numbered applicant received; return every verdict.

    The odd-numbered ones never answer: their SMS step times out.
    """
    undecided = set(range(SESSIONS))
    typed: set[int] = set()
    verdicts: dict[str, Outcome] = {}
    end = time.monotonic() + DEADLINE
    while undecided and time.monotonic() < end:
        for index in sorted(undecided):
            sid = session_id(index)
            try:
                session = await verifier.get(sid)
            except Exception:  # noqa: BLE001, S112 - not created yet, or the store is busy
                continue
            if session.verdict is not None:
                verdicts[sid] = session.verdict.outcome
                undecided.discard(index)
                continue
            texts = vendor.texts_to(phone(index))
            if index % 2 or index in typed or not texts:
                continue
            code = re.findall(r"\d{6}", texts[-1])[-1]
            try:
                await verifier.submit(sid, "sms", {"code": code})
            except (StepNotWaitingError, ConcurrentUpdateError):
                continue  # not waiting yet (its start is being saved): again later
            except SessionFinishedError:
                pass
            typed.add(index)
        await asyncio.sleep(0.1)
    if undecided:
        stuck = []
        for index in sorted(undecided)[:5]:
            sid = session_id(index)
            session = await verifier.get(sid)
            stuck.append(
                (
                    sid,
                    [
                        (r.step_id, r.state.value, r.attempt, r.errors)
                        for r in session.steps
                    ],
                    await verifier.store.pending_effects(sid),
                    await verifier.store.timers(sid),
                    vendor.texts_to(phone(index)),
                )
            )
        pytest.fail(f"{len(undecided)} sessions undecided: {stuck}")
    return verdicts


async def test_killed_workers_lose_nothing_and_repeat_nothing(
    shared_url: str, vendor: FakeVendor, tmp_path: Path
) -> None:
    """200 sessions on two replicas, one killed three times: every verdict, one SMS and one pull each."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    points = list(KILL_POINTS)
    rng.shuffle(points)
    migrate = cli(tmp_path, "store", "migrate", "--store", shared_url)
    assert await exited(migrate, 30) == 0, (tmp_path / "process-0.log").read_text()
    processes = [
        worker(
            tmp_path,
            shared_url,
            vendor,
            FAULT_SESSIONS=f"{SESSIONS // 2}-{SESSIONS - 1}",
        )
    ]
    kills: list[tuple[str, int, int]] = []
    store = store_from_url(shared_url)
    async with httpx.AsyncClient() as client:
        replica = Verifier(
            POLICY, channels=channels(vendor.url, client), store=store, watch_poll=0.2
        )
        try:
            for point in points:
                at = rng.randint(3, 60)
                doomed = worker(
                    tmp_path,
                    shared_url,
                    vendor,
                    FAULT_SESSIONS=f"0-{SESSIONS // 2 - 1}",
                    FAULT_KILL=point,
                    FAULT_KILL_AT=str(at),
                )
                kills.append((point, at, await exited(doomed, 60)))
            processes.append(
                worker(
                    tmp_path,
                    shared_url,
                    vendor,
                    FAULT_SESSIONS=f"0-{SESSIONS // 2 - 1}",
                )
            )
            verdicts = await type_codes(replica, vendor)
            for process in processes:
                process.send_signal(signal.SIGTERM)
            # SIGTERM stops a worker cleanly.
            assert [await exited(p, 20) for p in processes] == [0, 0]
        finally:
            await replica.aclose()
            await store.aclose()
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait(10)  # reaped here, not left to a later test
    context = f"seed {seed}, kills {kills}"
    assert [code for _, _, code in kills] == [-signal.SIGKILL] * 3, context
    assert len(verdicts) == SESSIONS
    for index in range(SESSIONS):
        texts = vendor.texts_to(phone(index))
        assert len(texts) == 1, f"{session_id(index)} got {len(texts)} texts; {context}"
        billed = [
            key for key in vendor.pulls if key.startswith(f"{session_id(index)}:")
        ]
        assert billed == [f"{session_id(index)}:pull:1"], context
    assert all(count == 1 for count in vendor.pulls.values())
    approved = [sid for sid, outcome in verdicts.items() if outcome is Outcome.APPROVED]
    assert approved, context  # codes typed in time pass
    assert set(verdicts.values()) <= {Outcome.APPROVED, Outcome.REJECTED}, context
