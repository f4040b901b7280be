"""The public API as an app writes it: type-checked with mypy --strict, never run."""

from __future__ import annotations

from datetime import date

from multiverify import (
    Applicant,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Session,
    Step,
    Verdict,
    Verifier,
)
from multiverify.channels import Finished, ProviderEvent, StepContext, StepOutcome
from multiverify.exceptions import ProviderError, StepNotWaitingError
from multiverify.policy import load_policy
from multiverify.stores import SqliteStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel


class AlwaysPasses:
    """A user-written channel satisfies the Channel protocol structurally."""

    spec = ChannelSpec(name="always", automatic=True)
    state_type = None

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Finished(result=ChannelResult(status=ResultStatus.PASSED))

    async def handle(
        self, context: StepContext, state: object, message: object, /
    ) -> StepOutcome:
        raise NotImplementedError

    async def cancel(self, context: StepContext, state: object, /) -> None:
        return None


async def app() -> Outcome:
    policy = Policy(
        name="p",
        version="1",
        steps=[Step(id="a", channel="always", retry=RetrySettings(attempts=2))],
        rules=[
            Rule(outcome="approved", when="steps.a.status == 'passed'", reason="ok")
        ],
    )
    from_file: Policy = load_policy("policy.toml")
    applicant = Applicant(
        applicant_id="x",
        name="Li Wei",
        national_id="110101199003074512",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="100", currency="CNY", term_months=3, purpose="phone"
        ),
    )
    scripted = ScriptedChannel("sms_code", [Scripted.passes()])
    async with (
        SqliteStore("sessions.db") as store,
        Verifier(
            [policy, from_file],
            channels=[AlwaysPasses(), scripted],
            store=store,
            clock=FakeClock(),
        ) as verifier,
    ):
        session: Session = await verifier.start(applicant)
        try:
            await verifier.submit(session.session_id, "a", {"code": "1234"})
        except StepNotWaitingError as exc:
            step_id: str = exc.step_id
            del step_id
        except ProviderError as exc:
            retryable: bool = exc.retryable
            del retryable
        updated: Session | None = await verifier.handle_event(
            ProviderEvent(session_id=session.session_id, step_id="a", kind="done")
        )
        del updated
        verdict: Verdict = await verifier.wait(session.session_id)
        text: str = verdict.explain()
        del text
        return verdict.outcome
