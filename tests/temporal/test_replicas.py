"""Two worker processes as replicas of one app, against a fake vendor on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from replica import VERIFF_SECRET, replica_policy
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from multiverify import AuditTrail, Outcome
from multiverify.providers import veriff_signature
from multiverify.sandbox import sandbox_code
from multiverify.stores import SqliteStore
from multiverify.temporal import TemporalVerifier

REPLICA = Path(__file__).with_name("replica.py")


class FakeVendor:
    """An SMS gateway and a credit bureau on 127.0.0.1 that count every request by idempotency key."""

    def __init__(self) -> None:
        self.sends: Counter[str] = Counter()
        self.pulls: Counter[str] = Counter()
        self.texts: dict[str, str] = {}
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                if self.path == "/sms":
                    vendor.sends[key] += 1
                    vendor.texts[key] = body["text"]
                else:
                    vendor.pulls[key] += 1
                answer = b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                del args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    """A fresh fake vendor."""
    with FakeVendor() as made:
        yield made


class Replicas:
    """Replica processes sharing one task queue and one SQLite store."""

    def __init__(self, env: WorkflowEnvironment, vendor: FakeVendor, tmp: Path) -> None:
        self._address = env.client.service_client.config.target_host
        self._vendor = vendor.url
        self.store = tmp / "store.db"
        self.task_queue = f"replicas-{tmp.name}"
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> tuple[asyncio.subprocess.Process, str, str]:
        """Start one replica; return its process, its app's URL and its webhook app's URL."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPLICA),
            "--address",
            self._address,
            "--task-queue",
            self.task_queue,
            "--vendor",
            self._vendor,
            "--store",
            str(self.store),
            stdout=asyncio.subprocess.PIPE,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert line.startswith(b"ready "), line
        _, port, webhook_port = line.split()
        return (
            process,
            f"http://127.0.0.1:{int(port)}",
            f"http://127.0.0.1:{int(webhook_port)}",
        )

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


@pytest.fixture
async def replicas(
    temporal_env: WorkflowEnvironment, vendor: FakeVendor, tmp_path: Path
) -> AsyncIterator[Replicas]:
    """Replica processes, killed at the end."""
    made = Replicas(temporal_env, vendor, tmp_path)
    try:
        yield made
    finally:
        await made.stop()


async def until(
    http: httpx.AsyncClient, url: str, want: dict[str, str], *, within: float = 30
) -> dict[str, Any]:
    """Poll a replica's view of a session until its steps are in the wanted states."""
    async with asyncio.timeout(within):
        while True:
            seen = (await http.get(url)).json()
            if all(seen.get("steps", {}).get(k) == v for k, v in want.items()):
                return seen
            await asyncio.sleep(0.05)


class TestReplicas:
    async def test_webhook_to_replica_b_completes_a_session_started_through_a(
        self, client: Client, replicas: Replicas, vendor: FakeVendor
    ) -> None:
        """The code and Veriff's signed decision webhook (delivered twice, and once forged) reach replica B's webhook app; the session started through A is approved."""
        (_, a, _), (_, _, b) = await asyncio.gather(replicas.start(), replicas.start())
        sid = "webhook-b"
        async with httpx.AsyncClient(timeout=30) as http:
            started = await http.post(
                f"{a}/start", json={"session_id": sid, "sms_timeout": "30s"}
            )
            assert started.status_code == 200, started.text
            await until(
                http, f"{a}/session/{sid}", {"sms": "waiting", "bureau": "done"}
            )
            code = sandbox_code(sid, "sms", 1)
            assert code in vendor.texts[f"{sid}:sms:1"]  # the applicant reads the SMS
            submitted = await http.post(
                f"{b}/sessions/{sid}/steps/sms/submit", json={"code": code}
            )
            assert submitted.status_code == 200, submitted.text
            assert submitted.json()["state"] == "done"
            await until(http, f"{a}/session/{sid}", {"video": "waiting"})
            body = json.dumps(
                {
                    "status": "success",
                    "verification": {
                        "id": "veriff-session-1",
                        "attemptId": "attempt-1",
                        "vendorData": f"{sid}:video:1",
                        "status": "approved",
                        "code": 9001,
                    },
                }
            ).encode()
            forged = await http.post(
                f"{b}/webhooks/veriff",
                headers={"X-HMAC-SIGNATURE": veriff_signature("guess", body)},
                content=body,
            )
            assert forged.status_code == 403
            signed = {"X-HMAC-SIGNATURE": veriff_signature(VERIFF_SECRET, body)}
            for _ in range(2):  # Veriff delivers its webhook twice
                delivered = await http.post(
                    f"{b}/webhooks/veriff", headers=signed, content=body
                )
                assert delivered.status_code == 200, delivered.text
        verifier = TemporalVerifier(
            client, replica_policy("30s"), task_queue=replicas.task_queue
        )
        verdict = await asyncio.wait_for(verifier.wait(sid), timeout=30)
        assert verdict.outcome is Outcome.APPROVED
        assert vendor.sends == {f"{sid}:sms:1": 1}
        assert vendor.pulls == {f"{sid}:bureau:1": 1}
        trail = await verifier.audit_events(sid)
        video_inputs = [
            e
            for e in trail
            if e.kind == "input" and e.data["input"].get("step_id") == "video"
        ]
        assert [e.data["input"]["type"] for e in video_inputs] == [
            "StepStarted",
            "StepFinished",
        ]

    async def test_replica_b_finishes_a_session_whose_replica_was_killed(
        self, client: Client, replicas: Replicas, vendor: FakeVendor
    ) -> None:
        """Replica A is SIGKILLed while the session waits on its SMS code timer; B fires the timer, nothing is sent twice."""
        process_a, a, _ = await replicas.start()
        sid = "killed-a"
        async with httpx.AsyncClient(timeout=30) as http:
            await http.post(f"{a}/start", json={"session_id": sid, "sms_timeout": "6s"})
            await until(
                http, f"{a}/session/{sid}", {"sms": "waiting", "bureau": "done"}
            )
            _, b, _ = await replicas.start()
            seen = (await http.get(f"{a}/session/{sid}")).json()
            assert seen["outcome"] is None  # still waiting for the code
        process_a.send_signal(signal.SIGKILL)
        await process_a.wait()
        verifier = TemporalVerifier(
            client, replica_policy("6s"), task_queue=replicas.task_queue
        )
        verdict = await asyncio.wait_for(verifier.wait(sid), timeout=60)
        assert verdict.outcome is Outcome.EXPIRED
        assert [r.code for r in verdict.reasons] == ["sms.expired"]
        assert vendor.sends == {f"{sid}:sms:1": 1}
        assert vendor.pulls == {f"{sid}:bureau:1": 1}
        async with httpx.AsyncClient(timeout=30) as http:
            seen = (await http.get(f"{b}/session/{sid}")).json()
        assert seen["outcome"] == "expired"
        async with SqliteStore(replicas.store) as store:
            await asyncio.sleep(0)
            stored = await store.audit_events(sid)
        assert AuditTrail.verify(stored) == len(stored)
        assert stored[-1].kind == "verdict"
