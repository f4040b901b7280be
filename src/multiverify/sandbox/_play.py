"""Play a persona through a verification: answer its challenges as the applicant would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .._session import Session, SessionStatus, StepState
from ..channels import ProviderEvent
from ..exceptions import SessionError
from ._channels import sandbox_code, sandbox_vendor

if TYPE_CHECKING:
    from .._session import StepRecord
    from .._verifier import Verifier
    from ..channels import ChannelRegistry
    from ._personas import Persona
    from ._sms import SandboxSms
    from ._video import SandboxVideoVendor

__all__ = ["ProgressHook", "play"]

ProgressHook = Callable[[Session], Awaitable[None]]
"""Called with the session as stored, each time [`play`][multiverify.sandbox.play] looks at it."""

_POLL = 0.05


async def play(
    verifier: Verifier,
    persona: Persona,
    *,
    speed: float = 1.0,
    on_progress: ProgressHook | None = None,
    poll: float = _POLL,
    video: SandboxVideoVendor | None = None,
    sms: SandboxSms | None = None,
) -> Session:
    """Start a session for the persona's applicant and act as the applicant until it ends.

    Sandbox vendors behind the verifier's channels are connected to it
    first, so their callbacks reach the session (the persona's phone
    answers the confirmation call). When an ``sms_code`` step waits, the
    persona reads the SMS (from the sandbox vendor's inbox when ``sms`` is
    given) and submits the code ([`Verifier.submit`][multiverify.Verifier.submit]); when
    a ``video_sign`` step waits, the persona completes the video session and
    its ``decision`` callback arrives ([`Verifier.handle_event`][multiverify.Verifier.handle_event]);
    with a sandbox video vendor, the persona opens the session's link there
    and the vendor's signed webhooks bring the decision instead.
    Input that arrives after the step stopped waiting (the session was
    decided meanwhile) is dropped, as a late tap in the app would be.

    Args:
        verifier: a verifier wired with [`simulated_channels`][multiverify.sandbox.simulated_channels].
        persona: who applies.
        speed: scales the persona's delays; ``0`` answers at once.
        on_progress: called with each new version of the session, and with
            the final one.
        poll: seconds between looks at the session.
        video: the sandbox video vendor the ``video_sign`` channel runs on,
            if it runs the real channel.
        sms: the sandbox SMS vendor whose inbox the persona reads.

    Returns:
        The finished session (with its verdict, unless it was cancelled), or
        the session waiting in the review queue (status ``review``, with its
        automatic verdict) when its policy leaves a verdict of ``review`` to
        people.
    """
    vendors = []
    # Only an embedded Verifier runs channels in this process; on Temporal the
    # workers run them, and nothing here can connect to their vendors.
    registry: ChannelRegistry | None = getattr(verifier, "channels", None)
    channels = [registry.get(name) for name in registry] if registry else []
    for channel in channels:
        vendor = sandbox_vendor(channel)
        if vendor is not None:
            vendor.connect(verifier)
            vendors.append(vendor)
    session = await verifier.start(persona.applicant)
    session_id = session.session_id
    done = asyncio.ensure_future(_finished(verifier, session_id))
    answered: set[tuple[str, int]] = set()
    replies: set[asyncio.Task[None]] = set()
    seen: Session | None = None
    try:
        while True:
            session = await verifier.get(session_id)
            if on_progress is not None and session != seen:
                await on_progress(session)
            seen = session
            if session.finished or _left_to_a_reviewer(session):
                break
            policy = verifier.policy(session.policy.hash)
            for record in session.steps:
                key = (record.step_id, record.attempt)
                if record.state is not StepState.WAITING or key in answered:
                    continue
                answered.add(key)
                reply = _reply(
                    verifier,
                    persona=persona,
                    session_id=session_id,
                    record=record,
                    channel=policy.step(record.step_id).channel,
                    speed=speed,
                    video=video,
                    sms=sms,
                )
                if reply is not None:
                    task = asyncio.ensure_future(reply)
                    replies.add(task)
                    task.add_done_callback(replies.discard)
            _ = await asyncio.wait({done}, timeout=poll)
    finally:
        for task in (done, *replies):
            task.cancel()
        await asyncio.gather(done, *replies, return_exceptions=True)
        for vendor in vendors:  # its calls end with the session
            await vendor.aclose()
    return session


def _left_to_a_reviewer(session: Session) -> bool:
    """Whether the session waits for a person's decision, not for the applicant.

    Under a policy with a ``[review]`` table a verdict of ``review`` waits in
    the review queue, which no persona works: waiting for it would never end.
    An evidence step a reviewer asked for is still the applicant's to answer.
    """
    return session.status is SessionStatus.REVIEW and not any(
        record.state in _ACTIVE for record in session.steps
    )


_ACTIVE = frozenset({StepState.PENDING, StepState.RUNNING, StepState.WAITING})


async def _finished(verifier: Verifier, session_id: str) -> None:
    try:
        _ = await verifier.wait(session_id)
    except SessionError:
        return  # cancelled: the loop sees it in the store


def _reply(
    verifier: Verifier,
    *,
    persona: Persona,
    session_id: str,
    record: StepRecord,
    channel: str,
    speed: float,
    video: SandboxVideoVendor | None = None,
    sms: SandboxSms | None = None,
) -> Awaitable[None] | None:
    if channel == "sms_code" and persona.types_code:
        if sms is None:
            code = sandbox_code(session_id, record.step_id, record.attempt)
            return _later(
                verifier,
                persona.typing_delay * speed,
                lambda: verifier.submit(session_id, record.step_id, {"code": code}),
            )
        inbox = sms

        async def type_it() -> Session | None:
            # The text arrives, then the applicant reads the newest code;
            # with no text there is nothing to type.
            code = inbox.latest_code(persona.applicant.phone)
            if code is None:
                return None
            return await verifier.submit(session_id, record.step_id, {"code": code})

        return _later(
            verifier, (persona.sms_delivery + persona.typing_delay) * speed, type_it
        )
    if channel == "video_sign" and persona.completes_video and video is not None:
        url = record.challenge.url if record.challenge is not None else None
        if url is None:
            return None
        return _later(
            verifier,
            persona.video_delay * speed,
            lambda: video.open(url, holder=persona.applicant),
        )
    if channel == "video_sign" and persona.completes_video:
        event = ProviderEvent(
            session_id=session_id,
            step_id=record.step_id,
            kind="decision",
            data={"decision": "completed"},
            dedupe_key=f"{session_id}:{record.step_id}:{record.attempt}:decision",
            attempt=record.attempt,
        )
        return _later(
            verifier, persona.video_delay * speed, lambda: verifier.handle_event(event)
        )
    return None


async def _later(
    verifier: Verifier, delay: float, send: Callable[[], Awaitable[object]]
) -> None:
    await verifier.clock.sleep(delay)
    try:
        _ = await send()
    except SessionError:
        return  # the step stopped waiting meanwhile: a late tap, ignored
