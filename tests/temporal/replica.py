"""One app replica for the multi-process tests: a Temporal worker plus a small loopback HTTP app.

Run as ``python replica.py --address HOST:PORT --task-queue Q --vendor URL
--store PATH``; it prints ``ready <port> <webhook port>`` once its worker
polls and both its apps listen on 127.0.0.1. The lending app's own small
JSON app:

- ``POST /start``: ``{"session_id", "sms_timeout"}``, starts a session;
- ``GET /session/<id>``: the steps' states and the verdict.

and, on the webhook port, the SDK's webhook app (``multiverify.asgi``) under
uvicorn: Veriff's decision webhook at ``/webhooks/veriff`` (signed with
``VERIFF_SECRET``) and the applicant's code submission at
``/sessions/<id>/steps/<step>/submit``.

Its channels call a fake vendor at ``--vendor`` over loopback HTTP: the
bureau pulls a report, the SMS channel sends a code (the vendor keeps the
message, as the applicant's phone would), the video channel waits for the
vendor's decision webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import uvicorn
from temporalio.client import Client

from multiverify import (
    Applicant,
    Challenge,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Policy,
    ResultStatus,
    Rule,
    Signal,
    Step,
)
from multiverify.asgi import create_app
from multiverify.channels import (
    Finished,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    Waiting,
)
from multiverify.exceptions import MultiverifyError
from multiverify.sandbox import SimulatedChannel, get_persona, sandbox_code
from multiverify.stores import SqliteStore
from multiverify.temporal import TemporalVerifier, create_worker
from multiverify.testing import Scripted
from multiverify.webhooks import VeriffWebhooks

VERIFF_SECRET = "replica-veriff-shared-secret"

APPLICANT = Applicant(
    applicant_id="replica-1",
    name="Wang Fang",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="8000", currency="CNY", term_months=12, purpose="laptop"
    ),
)


def replica_policy(sms_timeout: str) -> Policy:
    """Bureau and SMS together, then the video signing; an SMS code never typed expires the session."""
    return Policy(
        name="replicas",
        version="1",
        steps=[
            Step(id="bureau", channel="credit_bureau"),
            Step(id="sms", channel="sms_code", timeout=sms_timeout),
            Step(id="video", channel="video_sign", after=["sms"]),
        ],
        rules=[
            Rule(
                outcome="expired",
                when="steps.sms.status == 'timeout'",
                reason="sms.expired",
            ),
            Rule(
                outcome="approved",
                when="steps.bureau.status == 'passed' && steps.sms.status == 'passed' "
                "&& steps.video.status == 'passed'",
                reason="all.confirmed",
            ),
        ],
    )


class VendorChannel:
    """A channel whose ``start`` posts to the fake vendor with the attempt's idempotency key."""

    def __init__(self, name: str, path: str, http: httpx.AsyncClient) -> None:
        self._spec = ChannelSpec(name=name)
        self._path = path
        self._http = http

    @property
    def spec(self) -> ChannelSpec:
        return self._spec

    @property
    def state_type(self) -> None:
        return None

    async def start(self, context: StepContext, /) -> StepOutcome:
        body: dict[str, Any] = {"to": context.applicant.phone}
        if self._spec.name == "sms_code":
            code = sandbox_code(context.session_id, context.step_id, context.attempt)
            body["text"] = f"Your code is {code}"
        response = await self._http.post(
            self._path,
            json=body,
            headers={"Idempotency-Key": context.idempotency_key},
        )
        response.raise_for_status()
        if self._spec.name == "sms_code":
            return Waiting(
                challenge=Challenge(
                    step_id=context.step_id, kind="code", message="Enter the code"
                )
            )
        return Finished(
            result=ChannelResult(
                status=ResultStatus.PASSED, signals=(Signal(name="identity_match"),)
            )
        )

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        del state
        code = sandbox_code(context.session_id, context.step_id, context.attempt)
        if isinstance(message, Submission) and message.payload.get("code") == code:
            return Finished(
                result=ChannelResult(
                    status=ResultStatus.PASSED, signals=(Signal(name="code_verified"),)
                )
            )
        return Finished(
            result=ChannelResult(
                status=ResultStatus.FAILED, signals=(Signal(name="wrong_code"),)
            )
        )

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        del context, state


def video_channel() -> SimulatedChannel:
    """Waits for the vendor's decision webhook, then passes."""
    persona = get_persona("honest")
    return SimulatedChannel(
        "video_sign", [Scripted.waits(persona.video, kind="video_session")]
    )


Handler = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, Any]]]


async def serve_http(handler: Handler) -> asyncio.Server:
    """A minimal HTTP/1.1 JSON server on 127.0.0.1 (one request per connection)."""

    async def on_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request_line = (await reader.readline()).decode()
            method, target, _ = request_line.split(" ", 2)
            length = 0
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            raw = await reader.readexactly(length) if length else b"{}"
            status, answer = await handler(method, target, json.loads(raw or b"{}"))
        except Exception as exc:  # noqa: BLE001 - the test reads the error
            status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        body = json.dumps(answer, default=str).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(on_connection, "127.0.0.1", 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--vendor", required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()

    client = await Client.connect(args.address)
    http = httpx.AsyncClient(base_url=args.vendor)
    store = SqliteStore(args.store)
    channels = [
        VendorChannel("credit_bureau", "/pull", http),
        VendorChannel("sms_code", "/sms", http),
        video_channel(),
    ]
    verifiers: dict[str, TemporalVerifier] = {}

    def verifier(sms_timeout: str) -> TemporalVerifier:
        if sms_timeout not in verifiers:
            verifiers[sms_timeout] = TemporalVerifier(
                client, replica_policy(sms_timeout), task_queue=args.task_queue
            )
        return verifiers[sms_timeout]

    any_verifier = verifier("5s")

    async def handle(method: str, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            if method == "POST" and target == "/start":
                session = await verifier(body["sms_timeout"]).start(
                    APPLICANT, session_id=body["session_id"]
                )
                return 200, {"session_id": session.session_id}
            if method == "GET" and target.startswith("/session/"):
                session = await any_verifier.get(target.removeprefix("/session/"))
                return 200, {
                    "steps": {r.step_id: r.state.value for r in session.steps},
                    "outcome": None
                    if session.verdict is None
                    else session.verdict.outcome.value,
                }
        except MultiverifyError as exc:
            return 409, {"error": type(exc).__name__, "message": str(exc)}
        return 404, {"error": "no such route"}

    worker = create_worker(
        client,
        channels=channels,
        store=store,
        task_queue=args.task_queue,
        # A dead replica's sessions move to the others one second after their
        # next task was due, instead of Temporal's default five.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
    )
    webhooks = uvicorn.Server(
        uvicorn.Config(
            create_app(any_verifier, webhooks=[VeriffWebhooks(VERIFF_SECRET)]),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
        )
    )
    async with worker:
        serving = asyncio.ensure_future(webhooks.serve())
        while True:
            if webhooks.started:
                break
            await asyncio.sleep(0.01)
        webhook_port = webhooks.servers[0].sockets[0].getsockname()[1]
        server = await serve_http(handle)
        port = server.sockets[0].getsockname()[1]
        print(f"ready {port} {webhook_port}", flush=True)  # noqa: T201 - the test reads it
        async with server:
            await server.serve_forever()
        await serving


if __name__ == "__main__":
    asyncio.run(main())
