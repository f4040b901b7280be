"""A store outage mid-run loses nothing: calls fail with a typed error and succeed on retry.

Each test starts a private server on a free loopback port (a redis-server
with an append-only file; a PostgreSQL cluster made with initdb), stops it
while a session waits, and starts it again on the same data. The shared test
servers are never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import service_missing

from multiverify import (
    Applicant,
    AuditTrail,
    LoanApplication,
    Policy,
    Step,
    Verifier,
    Worker,
)
from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import store_from_url
from multiverify.testing import Scripted, ScriptedChannel

T = TypeVar("T")

PG_BIN = Path(os.environ.get("MULTIVERIFY_PG_BIN", "/usr/lib/postgresql/15/bin"))
POLICY = Policy(
    name="p",
    version="1",
    steps=[
        Step(id="bureau", channel="credit_bureau"),
        Step(id="sms", channel="sms_code", timeout="5m", after=["bureau"]),
    ],
)


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(*command: str | Path, user: str | None = None) -> None:
    """Run a command to completion (as ``user`` when this process is root)."""
    args = [str(part) for part in command]
    if user is not None and os.geteuid() == 0:
        args = ["runuser", "-u", user, "--", *args]
    subprocess.run(args, check=True, capture_output=True, timeout=60)  # noqa: S603


class RedisServer:
    """A private redis-server whose data survives a restart (append-only file)."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self._data = data
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=outage"

    def start(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603
            [
                str(shutil.which("redis-server")),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self._data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(10)


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        # Outside pytest's tmp_path, which only root may enter.
        self.data = Path(tempfile.mkdtemp(prefix="mv-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        run(
            PG_BIN / "initdb",
            "-D",
            self.data / "db",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            user="postgres",
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema=outage"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        )
        run(
            PG_BIN / "pg_ctl",
            "-D",
            self.data / "db",
            "-o",
            options,
            "-l",
            self.data / "log",
            "-w",
            "start",
            user="postgres",
        )

    def stop(self) -> None:
        run(
            PG_BIN / "pg_ctl",
            "-D",
            self.data / "db",
            "-m",
            "fast",
            "-w",
            "stop",
            user="postgres",
        )

    def remove(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)


def _wait_for_port(port: int) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture(params=["postgres", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RedisServer | PostgresServer]:
    """A private server, started."""
    made: RedisServer | PostgresServer
    if request.param == "redis":
        if shutil.which("redis-server") is None:
            service_missing("redis", "redis-server is not installed")
        made = RedisServer(tmp_path)
    else:
        if not (PG_BIN / "initdb").exists():
            service_missing("postgres", f"no initdb in {PG_BIN} (MULTIVERIFY_PG_BIN)")
        made = PostgresServer()
    made.start()
    try:
        yield made
    finally:
        try:
            made.stop()
        finally:
            if isinstance(made, PostgresServer):
                made.remove()


def applicant() -> Applicant:
    """An applicant."""
    return Applicant(
        applicant_id="a1",
        name="Li Lei",
        national_id="110101199001011234",
        phone="+8613800138000",
        date_of_birth=date(1990, 1, 1),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, tried again while it fails with StoreUnavailableError (as an app would).

    A pooled connection from before the restart fails once, typed, and is
    replaced.
    """
    end = time.monotonic() + 20
    while True:
        try:
            return await call()
        except StoreUnavailableError:
            assert time.monotonic() < end
            await asyncio.sleep(0.1)


async def test_an_outage_loses_nothing(server: RedisServer | PostgresServer) -> None:
    """Down: every call is a StoreUnavailableError. Up again: the same calls succeed."""
    store = store_from_url(server.url)
    channels = [
        ScriptedChannel("credit_bureau", [Scripted.passes()]),
        ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())]),
    ]
    async with Verifier(POLICY, channels=channels, store=store) as verifier:
        started = await verifier.start(applicant())
        sid = started.session_id
        await verifier.challenge(sid, "sms")
        worker = Worker(verifier, effect_grace=0)
        await asyncio.to_thread(server.stop)

        with pytest.raises(StoreUnavailableError):
            await verifier.submit(sid, "sms", {"code": "1"})
        with pytest.raises(StoreUnavailableError):
            await verifier.start(applicant(), session_id="second")
        with pytest.raises(StoreUnavailableError):
            await worker.run_once()

        await asyncio.to_thread(server.start)
        decided = await retried(lambda: verifier.submit(sid, "sms", {"code": "1"}))
        assert decided.verdict is not None
        # An effect whose save still met a connection from before the
        # restart stays in the outbox: the worker, as the app runs it,
        # resumes it.
        async with Worker(verifier, effect_grace=0, poll_interval=0.1):
            second = await retried(
                lambda: verifier.start(applicant(), session_id="second")
            )
            assert await retried(lambda: verifier.challenge(second.session_id, "sms"))
        assert await retried(worker.run_once) == 0
        trail = await retried(lambda: store.audit_events(sid))
        assert AuditTrail.verify(trail) == len(trail)
        assert sorted(await retried(store.session_ids)) == sorted([sid, "second"])
    await store.aclose()
