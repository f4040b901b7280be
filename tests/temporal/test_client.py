"""The TemporalVerifier's calls against a real dev server: the embedded Verifier's API and errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from conftest import running_worker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from multiverify import (
    AuditTrail,
    Fallback,
    Outcome,
    Policy,
    ResultStatus,
    Rule,
    SessionStatus,
    Step,
    StepState,
)
from multiverify._masking import mask_phone
from multiverify.channels import ProviderEvent, StepContext, StepMessage, StepOutcome
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    PullNotPermittedError,
    SessionFinishedError,
    SessionNotFoundError,
    StepNotFoundError,
    StepNotWaitingError,
    StoreUnavailableError,
)
from multiverify.sandbox import (
    get_persona,
    load_default_policy,
    sandbox_code,
    simulated_channels,
)
from multiverify.stores import MemoryStore
from multiverify.temporal import TemporalVerifier, workflow_id
from multiverify.testing import Scripted, ScriptedChannel

HONEST = get_persona("honest")
NO_ANSWER = get_persona("no-answer")


@pytest.fixture
async def store() -> MemoryStore:
    """The worker's audit store."""
    return MemoryStore()


@pytest.fixture
async def verifier(
    client: Client, store: MemoryStore
) -> AsyncIterator[TemporalVerifier]:
    """A verifier of the default policy with a worker of simulated no-answer channels."""
    async with (
        running_worker(
            client, simulated_channels(NO_ANSWER, speed=0.02), store=store
        ) as task_queue,
        TemporalVerifier(
            client, load_default_policy(), task_queue=task_queue, heartbeat_timeout=2
        ) as made,
    ):
        yield made


def new_id() -> str:
    return uuid.uuid4().hex


class TestTemporalVerifier:
    def test_needs_a_policy(self, client: Client) -> None:
        """No policy is a configuration error."""
        with pytest.raises(ConfigurationError):
            TemporalVerifier(client, [])

    def test_one_version_with_two_contents_is_refused(self, client: Client) -> None:
        """As on the embedded Verifier, one name and version cannot have two contents."""
        policy = load_default_policy()
        changed = attrs.evolve(policy, default="rejected")
        with pytest.raises(ConfigurationError, match="given twice with different"):
            TemporalVerifier(client, [policy, changed])

    def test_finds_policies_by_name_and_hash(self, client: Client) -> None:
        """Policies are found by name or hash; an unknown one is an error."""
        policy = load_default_policy()
        verifier = TemporalVerifier(client, policy)
        assert verifier.policy() is policy
        assert verifier.policy(policy.name) is policy
        assert verifier.policy(policy.hash) is policy
        assert "TemporalVerifier" in repr(verifier)
        assert verifier.client is client
        with pytest.raises(ConfigurationError):
            verifier.policy("nope")

    async def test_start_returns_the_started_session(
        self, verifier: TemporalVerifier
    ) -> None:
        """start answers once the session started: its first steps run."""
        session = await verifier.start(HONEST.applicant, session_id=new_id())
        assert session.status is SessionStatus.ACTIVE
        assert session.step("bureau").state is StepState.RUNNING
        assert session.step("call").state is StepState.PENDING

    async def test_a_loan_in_a_retired_currency_starts_no_workflow(
        self, client: Client
    ) -> None:
        """As on the embedded Verifier, a new loan in a currency out of use is refused before Temporal is asked."""
        loan = attrs.evolve(HONEST.applicant.loan, currency="BGL")
        verifier = TemporalVerifier(client, load_default_policy())
        with pytest.raises(InvalidInputError, match="no longer legal tender"):
            await verifier.start(attrs.evolve(HONEST.applicant, loan=loan))

    @pytest.mark.parametrize(
        "status",
        [
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.RESOURCE_EXHAUSTED,
        ],
    )
    async def test_temporal_out_of_reach_is_a_store_outage(
        self, client: Client, status: RPCStatusCode
    ) -> None:
        """A Temporal server that cannot answer now is a StoreUnavailableError, so the webhook app asks the vendor to deliver again."""
        verifier = TemporalVerifier(client, load_default_policy())

        async def down() -> None:
            raise RPCError("the frontend is restarting", status, b"")

        with pytest.raises(StoreUnavailableError, match="restarting") as info:
            await verifier._guard("s1", down())
        assert info.value.store == "temporal"

    async def test_a_session_id_starts_once(self, verifier: TemporalVerifier) -> None:
        """Starting a taken session id is a ConcurrentUpdateError, and leaves no unretrieved error behind."""
        loop = asyncio.get_running_loop()
        unhandled: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: unhandled.append(context))
        try:
            sid = new_id()
            await verifier.start(HONEST.applicant, session_id=sid)
            with pytest.raises(ConcurrentUpdateError):
                await verifier.start(HONEST.applicant, session_id=sid)
            gc.collect()
        finally:
            loop.set_exception_handler(None)
        assert unhandled == []

    async def test_code_and_webhook_decide_the_session(
        self, verifier: TemporalVerifier, store: MemoryStore
    ) -> None:
        """The typed code is taken at once, the duplicated webhook counts once, the verdict approves and the store holds the trail."""
        sid = new_id()
        await verifier.start(NO_ANSWER.applicant, session_id=sid)
        challenge = await verifier.challenge(sid, "sms")
        assert challenge.kind == "code"
        after = await verifier.submit(sid, "sms", {"code": sandbox_code(sid, "sms", 1)})
        assert after.step("sms").state is StepState.DONE
        await verifier.challenge(sid, "video")
        event = ProviderEvent(
            session_id=sid, step_id="video", kind="decision", dedupe_key="d-1"
        )
        applied = await verifier.handle_event(event)
        assert applied is not None
        assert applied.step("video").state is StepState.DONE
        # Delivered again: ignored, or refused once the workflow completed.
        with contextlib.suppress(SessionFinishedError):
            assert await verifier.handle_event(event) is None
        verdict = await verifier.wait(sid)
        assert verdict.outcome is Outcome.APPROVED
        trail = await verifier.audit_events(sid)
        assert AuditTrail.verify(trail) == len(trail)
        finished = [
            e for e in trail if e.data.get("input", {}).get("step_id") == "video"
        ]
        assert [e.data["input"]["type"] for e in finished] == [
            "StepStarted",
            "StepFinished",
        ]
        assert [e.hash for e in await store.audit_events(sid)] == [
            e.hash for e in trail
        ]

    async def test_input_for_a_step_that_does_not_wait_is_refused(
        self, verifier: TemporalVerifier
    ) -> None:
        """submit raises the core's typed errors: no such step, not waiting."""
        sid = new_id()
        await verifier.start(HONEST.applicant, session_id=sid)
        with pytest.raises(StepNotWaitingError):
            await verifier.submit(sid, "video", {"code": "1"})
        with pytest.raises(StepNotFoundError):
            await verifier.submit(sid, "ghost", {"code": "1"})
        with pytest.raises(StepNotFoundError):
            await verifier.challenge(sid, "ghost")

    async def test_cancel_stops_the_session(self, verifier: TemporalVerifier) -> None:
        """A cancelled session has no verdict: wait and a second cancel say so."""
        sid = new_id()
        await verifier.start(HONEST.applicant, session_id=sid)
        cancelled = await verifier.cancel(sid, reason="applicant withdrew")
        assert cancelled.status is SessionStatus.CANCELLED
        with pytest.raises(SessionFinishedError):
            await verifier.wait(sid)
        with pytest.raises(SessionFinishedError):
            await verifier.cancel(sid)
        with pytest.raises(SessionFinishedError):
            await verifier.submit(sid, "sms", {"code": "1"})
        with pytest.raises(SessionFinishedError):
            await verifier.handle_event(
                ProviderEvent(session_id=sid, step_id="video", kind="x")
            )

    async def test_unknown_sessions_are_not_found(
        self, verifier: TemporalVerifier
    ) -> None:
        """Every call on a session that never started is a SessionNotFoundError."""
        sid = new_id()
        with pytest.raises(SessionNotFoundError):
            await verifier.get(sid)
        with pytest.raises(SessionNotFoundError):
            await verifier.wait(sid)
        with pytest.raises(SessionNotFoundError):
            await verifier.submit(sid, "sms", {})
        with pytest.raises(SessionNotFoundError):
            await verifier.handle_event(
                ProviderEvent(session_id=sid, step_id="video", kind="x")
            )

    async def test_an_event_for_a_step_still_starting_waits_for_it(
        self, client: Client
    ) -> None:
        """A webhook that overtakes its step's start is applied once the step waits."""
        slow = simulated_channels(NO_ANSWER, speed=0.02)
        async with running_worker(client, slow) as task_queue:
            verifier = TemporalVerifier(
                client, load_default_policy(), task_queue=task_queue
            )
            sid = new_id()
            await verifier.start(NO_ANSWER.applicant, session_id=sid)
            # the call fails, the video starts: deliver its decision at once
            for _ in range(200):
                record = (await verifier.get(sid)).step("video")
                if record.state is not StepState.PENDING:
                    break
                await asyncio.sleep(0.005)
            await verifier.handle_event(
                ProviderEvent(
                    session_id=sid, step_id="video", kind="decision", attempt=1
                )
            )
            await verifier.submit(sid, "sms", {"code": sandbox_code(sid, "sms", 1)})
            verdict = await verifier.wait(sid)
        assert verdict.outcome is Outcome.APPROVED


class CrashingOnInput(ScriptedChannel):
    """An SMS channel that starts waiting, then raises on any input."""

    def __init__(self, error: Exception) -> None:
        super().__init__("sms_code", [Scripted.waits(Scripted.passes())])
        self.error = error

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        raise self.error


class TestCrashWhileHandling:
    async def test_the_step_ends_in_error_as_on_the_embedded_runtime(
        self, client: Client
    ) -> None:
        """``submit`` returns the session with the step in error and its attempt cancelled; no failure reaches the history."""
        applicant = HONEST.applicant
        sms = CrashingOnInput(RuntimeError(f"no route for {applicant.phone}"))
        bureau = ScriptedChannel("credit_bureau", [Scripted.passes()])
        video = ScriptedChannel("video_sign", [Scripted.passes()])
        policy = Policy(
            name="crash",
            version="1",
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(
                    id="sms",
                    channel="sms_code",
                    providers=["twilio", "vonage"],
                    fallback=Fallback(step="video", on=["error"]),
                ),
                Step(id="video", channel="video_sign"),
            ],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.bureau.status == 'passed' && steps.video.status == 'passed'",
                    reason="video.confirmed",
                )
            ],
        )
        async with running_worker(client, [bureau, sms, video]) as task_queue:
            verifier = TemporalVerifier(client, policy, task_queue=task_queue)
            sid = new_id()
            await verifier.start(applicant, session_id=sid)
            await verifier.challenge(sid, "sms")
            after = await verifier.submit(sid, "sms", {"code": "1"})
            verdict = await verifier.wait(sid)
            trail = await verifier.audit_events(sid)
            history = await client.get_workflow_handle(workflow_id(sid)).fetch_history()
        result = after.step("sms").result
        assert result is not None
        assert (result.status, result.attempts) == (ResultStatus.ERROR, 1)
        assert result.detail == (
            f"channel error: RuntimeError: no route for {mask_phone(applicant.phone)}"
        )
        assert verdict.outcome is Outcome.APPROVED
        assert len(sms.starts) == 1  # no failover to the second gateway
        assert [c.attempt for c in sms.cancels] == [1]
        [errored] = [
            e.data["input"]
            for e in trail
            if e.data.get("input", {}).get("type") == "StepErrored"
        ]
        assert errored["failover"] is False
        assert applicant.phone not in "".join(e.to_json() for e in trail)
        assert not [
            e
            for e in history.events
            if e.HasField("activity_task_failed_event_attributes")
        ]


class TestLocalRefusal:
    async def test_a_refused_pull_ends_the_step_without_failover(
        self, client: Client
    ) -> None:
        """The bureau guard's refusal ends the step in error at its first bureau, as on the embedded runtime."""
        refused = PullNotPermittedError(message="no consent", reason="no_consent")
        bureau = ScriptedChannel("credit_bureau", [Scripted.raises(refused)])
        policy = Policy(
            name="refused",
            version="1",
            steps=[
                Step(
                    id="bureau", channel="credit_bureau", providers=["first", "second"]
                )
            ],
            default="review",
        )
        async with running_worker(client, [bureau]) as task_queue:
            verifier = TemporalVerifier(client, policy, task_queue=task_queue)
            sid = new_id()
            await verifier.start(HONEST.applicant, session_id=sid)
            verdict = await verifier.wait(sid)
            record = (await verifier.get(sid)).step("bureau")
        assert verdict.outcome is Outcome.REVIEW
        assert len(bureau.starts) == 1
        assert record.attempt == 1
        assert record.result is not None
        assert (record.result.status, record.result.provider) == (
            ResultStatus.ERROR,
            "first",
        )


class TestUncertainOutcomes:
    async def test_a_call_lost_mid_way_is_reconciled_with_the_same_key(
        self, client: Client
    ) -> None:
        """A start whose outcome is unknown (its call timed out) is asked again once, with the same idempotency key, not retried blindly."""
        bureau = ScriptedChannel(
            "credit_bureau",
            [
                Scripted.passes(delay=30),  # the worker "hangs": the call times out
                Scripted.passes(signals=["identity_match"]),
            ],
        )
        policy = Policy(
            name="one",
            version="1",
            steps=[Step(id="bureau", channel="credit_bureau")],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.bureau.status == 'passed'",
                    reason="bureau.passed",
                )
            ],
        )
        async with running_worker(client, [bureau]) as task_queue:
            verifier = TemporalVerifier(
                client,
                policy,
                task_queue=task_queue,
                call_timeout=1,
                heartbeat_timeout=1,
            )
            sid = new_id()
            await verifier.start(HONEST.applicant, session_id=sid)
            verdict = await verifier.wait(sid)
            trail = await verifier.audit_events(sid)
        assert verdict.outcome is Outcome.APPROVED
        assert [c.idempotency_key for c in bureau.starts] == [f"{sid}:bureau:1"] * 2
        calls = [e.data["call"] for e in trail if "call" in e.data]
        assert calls[0]["reconciled"] is True
        assert len(calls[0]["uncertain"]) == 1


def test_specs_reach_the_workflow_without_their_options_check() -> None:
    """The phone channel's options check is code: the workflow's copy goes without it."""
    import json

    from multiverify.channels import ChannelRegistry
    from multiverify.temporal._client import _spec_wire

    spec = ChannelRegistry.builtin_specs()["phone_call"]
    assert spec.check_options is not None
    wire = _spec_wire(spec)
    assert "check_options" not in wire
    assert json.loads(json.dumps(wire, default=sorted))["name"] == "phone_call"
