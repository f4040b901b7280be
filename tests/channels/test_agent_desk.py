"""Tests for the agent desk: calls as queued tasks, claimed with a lease, outcomes submitted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from multiverify import ChannelResult, ResultStatus, Session, Verifier
from multiverify.channels import AgentDesk, AgentOutcome, PhoneCallChannel
from multiverify.exceptions import InvalidInputError
from multiverify.policy import Policy, Step
from multiverify.providers import AgentDeskProvider
from multiverify.sandbox import get_persona
from multiverify.stores import MemoryStore, SqliteStore
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


def _policy(**options: object) -> Policy:
    return Policy(
        name="desk",
        version="1",
        steps=[Step(id="call", channel="phone_call", options=dict(options))],
    )


class TestAcrossReplicas:
    async def test_list_claim_and_submit_from_another_replica(
        self, tmp_path: Path
    ) -> None:
        """One replica queues the call; another lists, claims and submits it; the first sees the result."""
        clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
        path = tmp_path / "verify.db"
        replicas = []
        for _ in range(2):
            store = SqliteStore(path, clock=clock)
            channel = PhoneCallChannel([AgentDeskProvider(queue=store)])
            verifier = Verifier(_policy(), channels=[channel], store=store, clock=clock)
            replicas.append(
                (verifier, AgentDesk(queue=store, submitter=verifier, clock=clock))
            )
        (first, first_desk), (_, second_desk) = replicas
        session = await first.start(HONEST)
        await first.wait_idle()
        (task,) = await second_desk.tasks()
        claimed = await second_desk.claim("agent-b", task_id=task.task_id)
        assert claimed is not None
        assert await first_desk.claim("agent-a") is None
        assert await second_desk.submit(
            task.task_id,
            "agent-b",
            AgentOutcome(disposition="confirmed", answers=RIGHT),
        )
        result = (await first.get(session.session_id)).step("call").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert await first_desk.tasks() == []
        for verifier, _ in replicas:
            await verifier.aclose()
            await verifier.store.aclose()


async def _worked(**outcome: Any) -> tuple[Verifier, AgentDesk, Session]:
    """Queue a call, have an agent claim it and report ``outcome``; the session after."""
    verifier, desk, _, session_id = await _desk()
    task = await desk.claim("a")
    assert task is not None
    await desk.submit(task.task_id, "a", AgentOutcome(**outcome))
    return verifier, desk, await verifier.get(session_id)


async def _submitted(**outcome: Any) -> tuple[Verifier, ChannelResult]:
    """As ``_worked``, for an outcome that ends the step: its result."""
    verifier, _, session = await _worked(**outcome)
    result = session.step("call").result
    assert result is not None
    return verifier, result


class TestOutcomes:
    async def test_flags_become_signals(self) -> None:
        """Agent flags become risk signals and leave the step inconclusive."""
        verifier, result = await _submitted(
            disposition="confirmed",
            answers=RIGHT,
            flags={"evasive", "inconsistent", "third_party_present"},
        )
        assert result.status is ResultStatus.INCONCLUSIVE
        assert {"evasive_answer", "inconsistent", "third_party_present"} <= set(
            result.signal_names
        )
        await verifier.aclose()

    async def test_wrong_answer_fails_identity(self) -> None:
        """A confirmed call whose ID digits are wrong fails on identity, as the IVR would."""
        verifier, result = await _submitted(
            disposition="confirmed", answers={**RIGHT, "id_last4": "0000"}
        )
        assert result.status is ResultStatus.FAILED
        assert "identity_mismatch" in result.signal_names
        await verifier.aclose()

    async def test_not_now_at_the_opening_question(self) -> None:
        """An applicant answering 'not now' to the opening question is called again later."""
        verifier, desk, session = await _worked(
            disposition="confirmed", answers={**RIGHT, "recording": "no"}
        )
        (again,) = await desk.tasks()
        assert again.task_id.endswith(":2")
        assert not session.step("call").result
        await verifier.aclose()

    @pytest.mark.parametrize(
        ("answers", "field"),
        [
            ({**RIGHT, "nope": "yes"}, "answers.nope"),
            ({k: v for k, v in RIGHT.items() if k != "purpose"}, "answers.purpose"),
        ],
    )
    async def test_outcome_that_does_not_fit(
        self, answers: dict[str, str], field: str
    ) -> None:
        """An outcome naming an unknown prompt or leaving one out is refused; the task stays claimed."""
        verifier, desk, _, session_id = await _desk()
        task = await desk.claim("a")
        assert task is not None
        with pytest.raises(InvalidInputError) as caught:
            await desk.submit(
                task.task_id,
                "a",
                AgentOutcome(disposition="confirmed", answers=answers),
            )
        assert caught.value.field == field
        (still,) = await desk.tasks()
        assert still.claimed_by == "a"
        assert not (await verifier.get(session_id)).step("call").result
        await verifier.aclose()

    async def test_call_back_later_at_the_applicants_time(self) -> None:
        """Call back later at a named time queues the next task then, inside the window."""
        verifier, desk, _ = await _worked(
            disposition="call_back_later",
            call_back_at=datetime.fromisoformat("2026-01-05T22:30:00+08:00"),
        )
        (again,) = await desk.tasks()
        assert again.task_id.endswith(":2")
        # 22:30 is outside 08:00-21:00: the task waits for the next morning.
        assert again.call_from == "2026-01-06T08:00:00+08:00"
        await verifier.aclose()

    async def test_notes_stay_out_of_the_audit_trail(self) -> None:
        """An agent's notes are kept with the step's state, never in the audit trail."""
        verifier, _, session = await _worked(
            disposition="confirmed", answers=RIGHT, notes="mentions a gambling debt"
        )
        assert session.step("call").channel_state["notes"] == "mentions a gambling debt"
        trail = json.dumps(
            [
                attrs.asdict(e)
                for e in await verifier.store.audit_events(session.session_id)
            ],
            default=str,
        )
        assert "gambling" not in trail  # a word no id or digest can spell
        result = session.step("call").result
        assert result is not None
        assert any(e.kind == "agent_notes" for e in result.evidence)
        await verifier.aclose()

    async def test_outside_the_window_the_task_waits(self) -> None:
        """A task queued at 23:00 local cannot be claimed before 08:00."""
        clock = FakeClock(datetime(2026, 1, 5, 15, 0, tzinfo=UTC))  # 23:00 Shanghai
        store = MemoryStore()
        verifier = Verifier(
            _policy(),
            channels=[PhoneCallChannel([AgentDeskProvider(queue=store)])],
            store=store,
            clock=clock,
        )
        await verifier.start(HONEST)
        await verifier.wait_idle()
        desk = AgentDesk(queue=store, submitter=verifier, clock=clock)
        (task,) = await desk.tasks()
        assert task.call_from == "2026-01-06T08:00:00+08:00"
        assert await desk.claim("a") is None
        await clock.advance(9 * 3600)
        assert await desk.claim("a") is not None
        await verifier.aclose()

    async def test_a_task_left_past_the_windows_close_waits(self) -> None:
        """A task available at 09:00 but still queued at 21:30 local cannot be claimed until 08:00 next day."""
        verifier, desk, clock, _ = await _desk()
        (task,) = await desk.tasks()
        await clock.advance(12.5 * 3600)  # 21:30 in Shanghai
        assert await desk.claim("a") is None
        assert await desk.claim("a", task_id=task.task_id) is None
        await clock.advance(10.5 * 3600)  # 08:00 the next morning
        claimed = await desk.claim("a")
        assert claimed is not None
        assert claimed.task_id == task.task_id
        await verifier.aclose()

    async def test_submit_after_the_session_ended(self) -> None:
        """An outcome for a cancelled session is not applied; the task is cleared."""
        verifier, desk, _, session_id = await _desk()
        task = await desk.claim("a")
        assert task is not None
        await verifier.cancel(session_id, reason="withdrawn")
        assert not await desk.submit(
            task.task_id, "a", AgentOutcome(disposition="confirmed", answers=RIGHT)
        )
        assert await desk.tasks() == []
        await verifier.aclose()


class TestCallBackTimes:
    async def test_a_time_without_zone_is_the_applicants(self) -> None:
        """A call-back time without an offset is read on the applicant's clock."""
        verifier, desk, _ = await _worked(
            disposition="call_back_later",
            call_back_at=datetime(2026, 1, 5, 18, 0),  # noqa: DTZ001 - local on purpose
        )
        (again,) = await desk.tasks()
        assert again.call_from == "2026-01-05T18:00:00+08:00"
        await verifier.aclose()

    async def test_a_malformed_time_is_refused(self) -> None:
        """A submission whose call_back_at is not a date-time is refused, naming the field."""
        verifier, desk, _, session_id = await _desk()
        task = await desk.claim("a")
        assert task is not None
        with pytest.raises(InvalidInputError) as caught:
            await verifier.submit(
                session_id,
                "call",
                {
                    "task": task.task_id,
                    "agent": "a",
                    "disposition": "call_back_later",
                    "call_back_at": "tomorrow",
                },
            )
        assert caught.value.field == "call_back_at"
        await verifier.aclose()

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"task": "other", "disposition": "confirmed"}, "task"),
            ({"disposition": "maybe"}, "disposition"),
            ({"disposition": "confirmed", "flags": ["drunk"]}, "flags"),
            ({"disposition": "confirmed", "notes": 7}, "notes"),
            ({"disposition": "confirmed", "answers": ["yes"]}, "answers"),
        ],
    )
    async def test_raw_submissions_are_checked(
        self, payload: dict[str, object], field: str
    ) -> None:
        """A submission that bypasses AgentDesk is still checked field by field."""
        verifier, _, _, session_id = await _desk()
        with pytest.raises(InvalidInputError) as caught:
            await verifier.submit(session_id, "call", payload)
        assert caught.value.field == field
        await verifier.aclose()


class TestClaims:
    async def test_an_outcome_without_an_agents_claim_is_refused(self) -> None:
        """An outcome submitted straight to the step (as an applicant could) is refused while no agent holds the task."""
        verifier, desk, _, session_id = await _desk()
        (task,) = await desk.tasks()
        for payload in (
            {"disposition": "confirmed", "answers": RIGHT},
            {"task": task.task_id, "disposition": "confirmed", "answers": RIGHT},
            {
                "task": task.task_id,
                "agent": "a",
                "disposition": "confirmed",
                "answers": RIGHT,
            },
        ):
            with pytest.raises(InvalidInputError) as caught:
                await verifier.submit(session_id, "call", payload)
            assert caught.value.field == "task"
        session = await verifier.get(session_id)
        assert session.step("call").result is None
        assert [t.task_id for t in await desk.tasks()] == [task.task_id]
        await verifier.aclose()

    async def test_only_the_agent_holding_a_live_claim(self) -> None:
        """Another agent's name, or a lapsed lease, cannot report the call; the claimant's live one can."""
        verifier, desk, clock, session_id = await _desk()
        task = await desk.claim("a", lease=60)
        assert task is not None
        payload = {"task": task.task_id, "disposition": "confirmed", "answers": RIGHT}
        with pytest.raises(InvalidInputError):
            await verifier.submit(session_id, "call", {**payload, "agent": "b"})
        await clock.advance(61)
        with pytest.raises(InvalidInputError):
            await verifier.submit(session_id, "call", {**payload, "agent": "a"})
        assert await desk.extend(task.task_id, "a", lease=60)
        assert await desk.submit(
            task.task_id, "a", AgentOutcome(disposition="confirmed", answers=RIGHT)
        )
        result = (await verifier.get(session_id)).step("call").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        await verifier.aclose()
