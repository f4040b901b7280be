"""The workflow's activities, run in Temporal's ActivityEnvironment (no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from multiverify import Applicant, AuditTrail, LoanApplication, Policy, Step
from multiverify._masking import mask_name, mask_phone
from multiverify._serde import structure_input, unstructure
from multiverify._session import StepErrored, new_session
from multiverify.channels import (
    ChannelRegistry,
    ProviderEvent,
    StepContext,
    Submission,
    TimerDue,
)
from multiverify.exceptions import (
    ProviderRejectedError,
    ProviderUnavailableError,
    PullNotPermittedError,
    SessionFinishedError,
    StoreUnavailableError,
)
from multiverify.stores import MemoryStore
from multiverify.temporal._activities import Activities
from multiverify.temporal._wire import (
    AuditBatch,
    StepCall,
    dump_message,
    error_from_failure,
    failure_from_error,
)
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

APPLICANT = Applicant(
    applicant_id="a1",
    name="Zhang San",
    national_id="110101199003071234",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="5000", currency="CNY", term_months=12, purpose="phone"
    ),
)


def call(channel: str = "credit_bureau", **changes: object) -> StepCall:
    fields: dict[str, object] = {
        "session_id": "s1",
        "step_id": "bureau",
        "attempt": 1,
        "channel": channel,
        "provider": "acme",
        "idempotency_key": "s1:bureau:1",
        "applicant": unstructure(APPLICANT),
        "options": {},
        "retry": {"attempts": 2, "wait_initial": 0.0, "wait_max": 0.0},
        "state": {},
    }
    fields.update(changes)
    return StepCall(**fields)  # type: ignore[arg-type]


def activities(
    *answers: Scripted, store: MemoryStore | None = None
) -> tuple[Activities, ScriptedChannel]:
    channel = ScriptedChannel("credit_bureau", list(answers))
    return (
        Activities(
            channels=ChannelRegistry([channel]),
            store=store or MemoryStore(),
            clock=FakeClock(),
        ),
        channel,
    )


class TestStartStep:
    async def test_retries_transient_errors_inside_the_activity(self) -> None:
        """A retryable error is retried by tenacity within the one activity attempt."""
        acts, channel = activities(
            Scripted.raises(ProviderUnavailableError(message="busy", provider="acme")),
            Scripted.passes(signals=["identity_match"]),
        )
        answer = await ActivityEnvironment().run(acts.start_step, call())
        assert answer.input["type"] == "StepFinished"
        assert [t["error"] is None for t in answer.tries] == [False, True]
        assert len(channel.starts) == 2

    async def test_a_permanent_vendor_error_is_a_non_retryable_failure(self) -> None:
        """A non-retryable ProviderError fails the activity for good, with its tries."""
        acts, channel = activities(
            Scripted.raises(
                ProviderRejectedError(message="bad number", provider="acme")
            )
        )
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(acts.start_step, call())
        assert caught.value.non_retryable
        assert caught.value.type == "ProviderRejectedError"
        assert caught.value.details[0]["provider"] == "acme"
        assert len(caught.value.details[0]["tries"]) == 1
        assert len(channel.starts) == 1

    async def test_a_local_refusal_tells_the_workflow_not_to_fail_over(self) -> None:
        """The bureau guard's refusal says ``failover: false``; a vendor's refusal, or the bureau's own, fails over."""
        for raised, failover in (
            (PullNotPermittedError(message="no consent", reason="no_consent"), False),
            (
                PullNotPermittedError(
                    message="no code",
                    reason="purpose_not_supported",
                    provider="acme",
                ),
                True,
            ),
            (ProviderRejectedError(message="no", provider="acme"), True),
        ):
            acts, _ = activities(Scripted.raises(raised))
            with pytest.raises(ApplicationError) as caught:
                await ActivityEnvironment().run(acts.start_step, call())
            assert caught.value.details[0]["failover"] is failover

    async def test_the_channel_gets_the_store_as_shared_state(self) -> None:
        """Channels see the worker's store as ``context.shared``, as under the Verifier."""
        store = MemoryStore()
        acts, channel = activities(Scripted.passes(), store=store)
        await ActivityEnvironment().run(acts.start_step, call())
        assert channel.starts[0].shared is store

    async def test_a_crashing_channel_is_a_non_retryable_failure(self) -> None:
        """A channel bug fails the attempt once, named as a channel error."""
        acts, _ = activities(Scripted.raises(RuntimeError("boom")))
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(acts.start_step, call())
        assert caught.value.non_retryable
        assert caught.value.details[0]["error"].startswith("channel error:")

    async def test_failures_kept_in_the_history_are_masked(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A crash or vendor error quoting the applicant reaches Temporal masked, chain dropped."""
        quoted = f"{APPLICANT.phone} ({APPLICANT.name}) is not reachable"
        for raised in (
            RuntimeError(quoted),
            ProviderRejectedError(message=quoted, provider="acme"),
        ):
            acts, _ = activities(Scripted.raises(raised))
            with pytest.raises(ApplicationError) as caught:
                await ActivityEnvironment().run(acts.start_step, call())
            failure = caught.value
            text = repr((failure.message, failure.details))
            assert APPLICANT.phone not in text
            assert APPLICANT.name not in text
            assert mask_phone(APPLICANT.phone) in failure.message
            assert failure.details[0]["tries"][0]["error"].endswith(
                f"{mask_phone(APPLICANT.phone)} ({mask_name(APPLICANT.name)}) is not reachable"
            )
            assert failure.__cause__ is None
        assert APPLICANT.phone not in caplog.text
        assert "RuntimeError" in caplog.text


class TestHandleAndCancel:
    async def test_handle_turns_the_answer_into_an_input(self) -> None:
        """A message for a waiting step comes back as the core input it makes."""
        acts, _ = activities(Scripted.waits(Scripted.passes(), expect={"code": "1"}))
        answer = await ActivityEnvironment().run(
            acts.handle_step,
            call(
                state={"call": 0},
                message=dump_message(Submission(payload={"code": "1"})),
            ),
        )
        assert answer.input["type"] == "StepFinished"

    async def test_cancel_failures_are_retryable_only_when_the_vendor_may_recover(
        self,
    ) -> None:
        """A vendor error while cancelling is retryable exactly when the error is."""

        class Refusing(ScriptedChannel):
            def __init__(self, error: Exception) -> None:
                super().__init__("credit_bureau", [Scripted.passes()])
                self.error = error

            async def cancel(self, context: StepContext, state: object, /) -> None:
                raise self.error

        for error, final in (
            (ProviderRejectedError(message="no", provider="acme"), True),
            (ProviderUnavailableError(message="busy", provider="acme"), False),
        ):
            acts = Activities(
                channels=ChannelRegistry([Refusing(error)]),
                store=MemoryStore(),
                clock=FakeClock(),
            )
            with pytest.raises(ApplicationError) as caught:
                await ActivityEnvironment().run(acts.cancel_step, call())
            assert caught.value.non_retryable is final

    async def test_a_channel_crash_while_handling_is_answered_as_the_steps_error(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bug quoting the applicant is no failure: the answer ends the step, masked, without failover."""
        quoted = f"no route for {APPLICANT.phone}"

        class Crashing(ScriptedChannel):
            def __init__(self) -> None:
                super().__init__("credit_bureau", [Scripted.passes()])

            async def handle(
                self, context: StepContext, state: object, message: object, /
            ) -> Any:
                raise KeyError(quoted)

        acts = Activities(
            channels=ChannelRegistry([Crashing()]),
            store=MemoryStore(),
            clock=FakeClock(),
        )
        answer = await ActivityEnvironment().run(
            acts.handle_step,
            call(message=dump_message(Submission(payload={"code": "1"}))),
        )
        event = structure_input(answer.input)
        assert isinstance(event, StepErrored)
        assert event.failover is False
        assert (
            event.error
            == f"channel error: KeyError: 'no route for {mask_phone(APPLICANT.phone)}'"
        )
        assert "crashed handling input for step bureau" in caplog.text
        assert "Traceback" in caplog.text
        assert APPLICANT.phone not in caplog.text

    async def test_a_channel_crash_while_cancelling_is_masked(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bug quoting the applicant fails the activity for good, masked, with no chain."""
        quoted = f"no route for {APPLICANT.phone}"

        class Crashing(ScriptedChannel):
            def __init__(self) -> None:
                super().__init__("credit_bureau", [Scripted.passes()])

            async def cancel(self, context: StepContext, state: object, /) -> None:
                raise RuntimeError(quoted)

        acts = Activities(
            channels=ChannelRegistry([Crashing()]),
            store=MemoryStore(),
            clock=FakeClock(),
        )
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(acts.cancel_step, call())
        failure = caught.value
        assert failure.non_retryable
        assert failure.type == "ChannelError"
        assert failure.message.startswith("channel error: ")
        assert mask_phone(APPLICANT.phone) in failure.message
        assert APPLICANT.phone not in failure.message
        assert failure.__cause__ is None
        assert "crashed cancelling step bureau" in caplog.text
        assert "Traceback" in caplog.text
        assert APPLICANT.phone not in caplog.text

    async def test_a_store_error_while_cancelling_is_retried(self) -> None:
        """An SDK error that is not the vendor's (the store) stays retryable."""

        class Unstored(ScriptedChannel):
            def __init__(self) -> None:
                super().__init__("credit_bureau", [Scripted.passes()])

            async def cancel(self, context: StepContext, state: object, /) -> None:
                raise StoreUnavailableError(message="down", store="memory")

        acts = Activities(
            channels=ChannelRegistry([Unstored()]),
            store=MemoryStore(),
            clock=FakeClock(),
        )
        with pytest.raises(StoreUnavailableError):
            await ActivityEnvironment().run(acts.cancel_step, call())


class TestSaveSession:
    async def test_a_repeated_batch_is_written_once(self) -> None:
        """Saving the same batch twice (a retried activity) leaves one copy of the trail."""
        store = MemoryStore()
        acts, _ = activities(Scripted.passes(), store=store)
        policy = Policy(
            name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
        )
        session, created = AuditTrail.created(
            new_session(
                policy, APPLICANT, session_id="s1", at=datetime(2026, 1, 1, tzinfo=UTC)
            ),
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        batch = AuditBatch(
            session=unstructure(session), events=[created.to_json()], version=0
        )
        env = ActivityEnvironment()
        await env.run(acts.save_session, batch)
        await env.run(acts.save_session, batch)
        assert len(await store.audit_events("s1")) == 1


class TestWire:
    def test_typed_errors_cross_temporal(self) -> None:
        """An SDK error becomes a named failure and comes back as the same error."""
        error = SessionFinishedError(message="done", session_id="s1")
        back = error_from_failure(failure_from_error(error))
        assert type(back) is SessionFinishedError
        assert (back.message, back.session_id) == ("done", "s1")

    def test_foreign_failures_are_not_ours(self) -> None:
        """A failure that names no SDK error maps to nothing, or keeps its message."""
        assert error_from_failure(ApplicationError("x", type="ValueError")) is None
        assert error_from_failure(None) is None
        odd = error_from_failure(
            ApplicationError("odd", "not a dict", type="SessionError")
        )
        assert odd is not None
        assert str(odd) == "odd"

    def test_messages_round_trip(self) -> None:
        """Every channel message survives the wire."""
        from multiverify.temporal._wire import load_message

        for message in (
            Submission(payload={"code": "1"}),
            ProviderEvent(session_id="s", step_id="v", kind="k", dedupe_key="d"),
            TimerDue(name="resend", at=datetime(2026, 1, 1, tzinfo=UTC)),
        ):
            assert load_message(dump_message(message)) == message
