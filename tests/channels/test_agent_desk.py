"""Tests for the agent desk: calls as queued tasks, claimed with a lease, outcomes submitted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from multiverify import ResultStatus, Verifier
from multiverify.channels import AgentDesk, AgentOutcome, PhoneCallChannel
from multiverify.exceptions import InvalidInputError
from multiverify.policy import Policy, Step
from multiverify.providers import AgentDeskProvider
from multiverify.sandbox import get_persona
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock

HONEST = get_persona("honest").applicant


async def _desk(**options: object) -> tuple[Verifier, AgentDesk, FakeClock, str]:
    clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
    store = MemoryStore()
    channel = PhoneCallChannel([AgentDeskProvider(queue=store)])
    policy = Policy(
        name="desk",
        version="1",
        steps=[Step(id="call", channel="phone_call", options=dict(options))],
    )
    verifier = Verifier(policy, channels=[channel], store=store, clock=clock)
    session = await verifier.start(HONEST)
    await verifier.wait_idle()
    return (
        verifier,
        AgentDesk(queue=store, submitter=verifier, clock=clock),
        clock,
        session.session_id,
    )


RIGHT = {
    "recording": "yes",
    "id_last4": HONEST.national_id[-4:],
    "birth_year": "1990",
    "loan_terms": "yes",
    "purpose": "yes",
    "third_party": "no",
}


class TestAgentDesk:
    async def test_claim_shows_masked_script_and_submit_passes(self) -> None:
        """The agent sees masked details and the rendered script; right answers pass."""
        verifier, desk, _, session_id = await _desk()
        (task,) = await desk.tasks()
        assert task.applicant["phone"] == "+86*******8000"
        assert "Wang" not in str(task.applicant)
        assert any("¥8,000.00" in p["text"] for p in task.script)
        claimed = await desk.claim("agent-7")
        assert claimed is not None
        assert claimed.claimed_by == "agent-7"
        assert await desk.submit(
            claimed.task_id,
            "agent-7",
            AgentOutcome(
                disposition="confirmed", answers=RIGHT, flags={"coached"}, notes="calm"
            ),
        )
        result = (await verifier.get(session_id)).step("call").result
        assert result is not None
        assert result.status is ResultStatus.INCONCLUSIVE  # the coached flag
        assert {"identity_confirmed", "intent_confirmed", "coached"} <= set(
            result.signal_names
        )
        assert await desk.tasks() == []
        await verifier.aclose()

    async def test_lapsed_claim_returns_to_the_queue(self) -> None:
        """An abandoned claim lapses and another agent takes the task."""
        verifier, desk, clock, _ = await _desk()
        first = await desk.claim("a", lease=60)
        assert first is not None
        assert await desk.claim("b") is None
        await clock.advance(61)
        second = await desk.claim("b")
        assert second is not None
        assert second.task_id == first.task_id
        with pytest.raises(InvalidInputError):
            await desk.submit(first.task_id, "a", AgentOutcome(disposition="declined"))
        await verifier.aclose()

    async def test_no_answer_requeues_per_schedule(self) -> None:
        """No answer puts a new task on the queue at the schedule's next time."""
        verifier, desk, _, session_id = await _desk()
        task = await desk.claim("a")
        assert task is not None
        await desk.submit(task.task_id, "a", AgentOutcome(disposition="no_answer"))
        (again,) = await desk.tasks()
        assert again.task_id.endswith(":2")
        assert again.call_from.startswith("2026-01-05T09:30")
        session = await verifier.get(session_id)
        assert not session.finished
        await verifier.aclose()

    @pytest.mark.parametrize(
        ("disposition", "signal"),
        [("wrong_person", "wrong_person"), ("declined", "intent_declined")],
    )
    async def test_failing_dispositions(self, disposition: str, signal: str) -> None:
        """Wrong person and declined fail the step with their signal."""
        verifier, desk, _, session_id = await _desk()
        task = await desk.claim("a")
        assert task is not None
        await desk.submit(task.task_id, "a", AgentOutcome(disposition=disposition))
        result = (await verifier.get(session_id)).step("call").result
        assert result is not None
        assert result.status is ResultStatus.FAILED
        assert signal in result.signal_names
        await verifier.aclose()

    def test_bad_outcomes(self) -> None:
        """Unknown dispositions and flags are refused with the field named."""
        with pytest.raises(InvalidInputError) as caught:
            AgentOutcome(disposition="maybe")
        assert caught.value.field == "disposition"
        with pytest.raises(InvalidInputError) as caught:
            AgentOutcome(disposition="confirmed", flags={"drunk"})
        assert caught.value.field == "flags"
