"""The credit-bureau channel: one guarded, deduplicated pull, turned into signals.

An attempt finishes at once. Before anything leaves the process the pull
must be permitted: a permissible purpose (the step's ``purpose`` option, or
the channel's default) and a consent record on the applicant
([`Consent`][multiverify.Consent] of scope ``credit_bureau``, in force and
covering that purpose). Otherwise [`PullNotPermittedError`][multiverify.exceptions.PullNotPermittedError].

A report is pulled once per applicant (the identity the bureau checks:
name, national ID, birth date, phone), purpose and bureau within ``reuse_ttl``,
across sessions and replicas: it is kept in the store's shared state under
a keyed digest of the applicant's identity (never the identity itself), and
a short lock makes a second session that asks at the same moment wait for
the first pull instead of making its own. The pull carries the attempt's
idempotency key, so the runtime's retries of the same attempt are one
inquiry at the bureau.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import attrs

from .._applicant import Consent
from .._duration import parse_duration
from .._results import ChannelResult, Evidence, ResultStatus, Signal
from .._specs import BUILTIN_CHANNELS, ChannelSpec, bureau_options_problems
from ..exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderResponseError,
    ProviderUnavailableError,
    PullNotPermittedError,
    StoreUnavailableError,
)
from ..providers import (
    BureauProvider,
    BureauReport,
    BureauRequest,
    FileStatus,
)
from ._base import Finished, StepContext, StepMessage, StepOutcome
from ._named import by_name, step_provider

__all__ = ["CONSENT_SCOPE", "CreditBureauChannel", "bureau_result"]

log = logging.getLogger("multiverify.channels.credit_bureau")

CONSENT_SCOPE = "credit_bureau"
"""The [`Consent`][multiverify.Consent] scope a pull requires."""

_SECRET_MIN = 16
_DEFAULT_LIMITS = {7: 3, 30: 4, 90: 6, 180: 8, 365: 10}


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _bad_option(problem: str) -> ConfigurationError:
    return ConfigurationError(message=f"credit_bureau step options: {problem}")


@attrs.frozen(kw_only=True)
class _Settings:
    purpose: str | None
    reuse_ttl: float
    min_score: int | None


def _signals(
    report: BureauReport, *, limits: Mapping[int, int], late_days: int
) -> list[Signal]:
    signals: list[Signal] = []
    identity = report.identity
    if identity.mismatched:
        signals.append(
            Signal(name="identity_mismatch", detail=",".join(identity.mismatched))
        )
    elif identity.checked and len(identity.matched) == len(identity.checked):
        signals.append(Signal(name="identity_match", detail=",".join(identity.matched)))
    if report.fraud_alerts:
        signals.append(Signal(name="fraud_alert", detail=",".join(report.fraud_alerts)))
    if report.security_freeze:
        signals.append(Signal(name="security_freeze"))
    if report.file is FileStatus.THIN_FILE:
        signals.append(Signal(name="thin_file"))
    elif report.file is FileStatus.NO_HIT:
        signals.append(Signal(name="no_hit"))
    over = [
        f"{i.count} in {i.days}d"
        for i in report.inquiries
        if i.days in limits and i.count > limits[i.days]
    ]
    if over:
        signals.append(Signal(name="many_recent_inquiries", detail=", ".join(over)))
    if report.delinquencies.at_least(late_days):
        signals.append(Signal(name="delinquent", detail=f"{late_days}+ days"))
    if report.blacklist_hits:
        signals.append(
            Signal(name="blacklist_hit", detail=",".join(report.blacklist_hits))
        )
    return signals


_BLOCKING = frozenset(
    {"identity_mismatch", "fraud_alert", "security_freeze", "blacklist_hit"}
)


def bureau_result(
    report: BureauReport,
    *,
    purpose: str,
    consent: str,
    reused: bool = False,
    inquiry_limits: Mapping[int, int] | None = None,
    delinquent_after: int = 60,
    min_score: int | None = None,
) -> ChannelResult:
    """The step's result for a report: signals, a score in ``[0, 1]``, evidence without personal data.

    ``failed`` on an identity mismatch, a fraud alert, a freeze or a
    blacklist hit (or a score under ``min_score``); ``inconclusive`` on a
    no hit or thin file; ``passed`` otherwise. Inquiries and delinquencies
    are signals for the policy to weigh.
    """
    limits = _DEFAULT_LIMITS if inquiry_limits is None else inquiry_limits
    signals = _signals(report, limits=limits, late_days=delinquent_after)
    names = {signal.name for signal in signals}
    low = (
        min_score is not None and report.score is not None and report.score < min_score
    )
    if names & _BLOCKING or low:
        status = ResultStatus.FAILED
    elif report.file is not FileStatus.HIT:
        status = ResultStatus.INCONCLUSIVE
    else:
        status = ResultStatus.PASSED
    identity = report.identity
    detail = f"{report.provider} {report.file.value.replace('_', ' ')}"
    if names - {"identity_match"}:
        detail += ": " + ", ".join(
            s.name for s in signals if s.name != "identity_match"
        )
    if low:
        detail += f"; score below {min_score}"
    if reused:
        detail += " (report reused)"
    return ChannelResult(
        status=status,
        signals=signals,
        score=report.normalised_score,
        provider=report.provider,
        detail=detail,
        evidence=[
            Evidence(
                kind="bureau_report",
                reference=f"{report.provider}:{report.report_id}",
                detail=f"preset={report.preset} matched={','.join(identity.matched) or '-'}"
                + (" reused" if reused else ""),
            ),
            Evidence(kind="consent", reference=consent, detail=f"purpose={purpose}"),
        ],
        facts={
            "report_id": report.report_id,
            "preset": report.preset,
            "file": report.file.value,
            "score": report.score,
            "score_model": report.score_model,
            "reason_codes": list(report.reason_codes),
            "matched": list(identity.matched),
            "mismatched": list(identity.mismatched),
            "fraud_alerts": list(report.fraud_alerts),
            "security_freeze": report.security_freeze,
            "blacklist_hits": list(report.blacklist_hits),
            "inquiries": {str(i.days): i.count for i in report.inquiries},
            "delinquencies": attrs.asdict(report.delinquencies),
            "purpose": purpose,
            "reused": reused,
        },
    )


def _limits(values: Mapping[int, int]) -> dict[int, int]:
    out = {int(days): int(count) for days, count in values.items()}
    if any(days <= 0 or count < 0 for days, count in out.items()):
        raise ConfigurationError(
            message="inquiry_limits: windows must be positive and limits not negative"
        )
    return out


class CreditBureauChannel:
    """Credit-bureau lookups over one or more [`BureauProvider`][multiverify.providers.BureauProvider]s.

    The step's ``providers`` list picks the bureau per attempt, so a bureau
    that fails (after the step's retries) fails over to the next one; a
    policy without the list uses the first. Step ``options`` override the
    defaults: ``purpose`` (the permissible purpose), ``reuse_ttl`` (a
    duration; ``0`` pulls afresh) and ``min_score``.

    Args:
        providers: the bureaus, by their ``name``; the first is the default.
        secret: keys the digest that names a cached report (at least 16
            bytes), so the store never holds an identity in clear.
        purpose: the permissible purpose when the step names none, such as
            ``credit_transaction``; ``None`` requires each step to name one.
        reuse_ttl: how long a report is reused for the same applicant
            (phone included), purpose and bureau, in seconds.
        inquiry_limits: the most inquiries allowed per window in days before
            ``many_recent_inquiries``.
        delinquent_after: how late (30, 60 or 90 days) a payment must be to
            signal ``delinquent``; derogatory records always do.
        min_score: a score below this fails the step; ``None`` leaves the
            score to the policy.
        wait: how long an attempt waits for another session's pull of the
            same report before pulling itself, in seconds.
        poll: how often it looks while waiting, in seconds.

    Raises:
        ConfigurationError: no providers, two with one name, a short
            secret, or a setting out of range.

    Added in 0.1.
    """

    def __init__(
        self,
        providers: Iterable[BureauProvider],
        *,
        secret: str | bytes,
        purpose: str | None = None,
        reuse_ttl: float | timedelta = timedelta(days=30),
        inquiry_limits: Mapping[int, int] | None = None,
        delinquent_after: int = 60,
        min_score: int | None = None,
        wait: float | timedelta = 30.0,
        poll: float | timedelta = 0.25,
    ) -> None:
        self._providers = by_name(
            providers, kind="bureau", channel="CreditBureauChannel"
        )
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < _SECRET_MIN:
            raise ConfigurationError(
                message=f"the bureau channel's secret needs at least {_SECRET_MIN} bytes"
            )
        self._key = key
        self._default = _Settings(
            purpose=purpose, reuse_ttl=_seconds(reuse_ttl), min_score=min_score
        )
        self._limits = _limits(
            _DEFAULT_LIMITS if inquiry_limits is None else inquiry_limits
        )
        if delinquent_after not in (30, 60, 90):
            raise ConfigurationError(message="delinquent_after must be 30, 60 or 90")
        self._late = delinquent_after
        self._wait = _seconds(wait)
        self._poll = _seconds(poll)
        if self._default.reuse_ttl < 0 or self._wait < 0 or self._poll <= 0:
            raise ConfigurationError(
                message="reuse_ttl and wait must not be negative, poll must be positive"
            )

    def __repr__(self) -> str:
        return (
            f"<multiverify.channels.CreditBureauChannel({', '.join(self._providers)})>"
        )

    @property
    def spec(self) -> ChannelSpec:
        """The built-in ``credit_bureau`` spec."""
        return BUILTIN_CHANNELS["credit_bureau"]

    @property
    def state_type(self) -> None:
        """``None``: an attempt finishes at once and keeps no state."""
        return None

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers' names, the default first."""
        return tuple(self._providers)

    # -- the protocol ------------------------------------------------------------

    def permit(self, context: StepContext) -> tuple[str, Consent]:
        """The permissible purpose and the consent allowing the pull, or why not.

        Raises:
            PullNotPermittedError: no purpose, no consent, or one that has
                lapsed or covers other purposes.
            ConfigurationError: the step's options are invalid.
        """
        purpose = self._settings(context.options).purpose
        if purpose is None:
            raise PullNotPermittedError(
                message="a credit pull needs a permissible purpose: set the step's "
                "'purpose' option or the channel's purpose",
                reason="no_purpose",
            )
        now = context.clock.now()
        consents = [c for c in context.applicant.consents if c.scope == CONSENT_SCOPE]
        if not consents:
            raise PullNotPermittedError(
                message=f"applicant {context.applicant.applicant_id} carries no "
                f"{CONSENT_SCOPE} consent record",
                reason="no_consent",
                purpose=purpose,
            )
        for consent in consents:
            if consent.covers(CONSENT_SCOPE, purpose, at=now):
                return purpose, consent
        in_force = any(
            (c.granted_at is None or c.granted_at <= now)
            and (c.expires_at is None or now < c.expires_at)
            for c in consents
        )
        reason = "purpose_not_consented" if in_force else "consent_expired"
        raise PullNotPermittedError(
            message=f"no {CONSENT_SCOPE} consent of applicant "
            f"{context.applicant.applicant_id} allows {purpose!r} now ({reason})",
            reason=reason,
            purpose=purpose,
        )

    async def start(self, context: StepContext, /) -> StepOutcome:
        """Check the purpose and consent, then reuse a recent report or pull one.

        Raises:
            PullNotPermittedError: the pull is not permitted (nothing sent).
            ConfigurationError: the step names a provider this channel
                lacks, or its options are invalid.
            InvalidInputError: the applicant lacks a field the bureau needs.
            ProviderError: the bureau failed; a malformed answer is a
                [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError].
        """
        purpose, consent = self.permit(context)
        settings = self._settings(context.options)
        provider = self._provider(context.provider)
        shared = context.shared
        key = self._report_key(context, purpose, provider.name)
        if shared is None or settings.reuse_ttl <= 0:
            report = await provider.pull(self._request(context, purpose, consent))
            return self._finished(report, purpose, consent, settings, reused=False)
        cached = await self._cached(context, key)
        if cached is not None:
            return self._finished(cached, purpose, consent, settings, reused=True)
        lock = f"{key}:lock"
        owner = context.idempotency_key
        waited = 0.0
        while not await self._lock(context, lock, owner):
            if waited >= self._wait:
                raise ProviderUnavailableError(
                    message="another pull of this report is still in flight",
                    provider=provider.name,
                )
            await context.clock.sleep(self._poll)
            waited += self._poll
            cached = await self._cached(context, key)
            if cached is not None:
                return self._finished(cached, purpose, consent, settings, reused=True)
        # Renewed while the pull runs: a bureau slower than the lock's ttl
        # must not let a second session pull the same report.
        keeper = asyncio.ensure_future(self._keep(context, lock, owner))
        try:
            report = await provider.pull(self._request(context, purpose, consent))
            await shared.put_value(
                key,
                json.dumps(report.to_data(), separators=(",", ":")),
                at=context.clock.now(),
                ttl=settings.reuse_ttl,
            )
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await shared.delete_value(lock, value=owner)
        return self._finished(report, purpose, consent, settings, reused=False)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        """A bureau step never waits, so it takes no input.

        Raises:
            InvalidInputError: always.
        """
        del context, state, message
        raise InvalidInputError(
            message="a credit_bureau step finishes at once and takes no input",
            field="payload",
        )

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        """Nothing to cancel: a pull is over when the step starts waiting for nothing."""
        del context, state

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self._providers.values():
            await provider.aclose()

    # -- helpers -------------------------------------------------------------------

    def _finished(
        self,
        report: BureauReport,
        purpose: str,
        consent: Consent,
        settings: _Settings,
        *,
        reused: bool,
    ) -> Finished:
        return Finished(
            result=bureau_result(
                report,
                purpose=purpose,
                consent=consent.reference,
                reused=reused,
                inquiry_limits=self._limits,
                delinquent_after=self._late,
                min_score=settings.min_score,
            )
        )

    @staticmethod
    def _request(context: StepContext, purpose: str, consent: Consent) -> BureauRequest:
        return BureauRequest(
            reference=context.idempotency_key,
            applicant=context.applicant,
            purpose=purpose,
            consent=consent.reference,
        )

    def _report_key(self, context: StepContext, purpose: str, provider: str) -> str:
        """A keyed digest of who the report is about, why and from whom: the store never sees the identity.

        It covers every element the bureau's identity check compares (the
        phone too): a report whose phone matched one session's number must
        not vouch for another number. And it names the bureau, since two
        bureaus' reports on one person differ.
        """
        applicant = context.applicant
        who = "\x1f".join(
            (
                applicant.national_id.strip().upper(),
                applicant.name.strip().casefold(),
                applicant.date_of_birth.isoformat(),
                applicant.phone.strip(),
                purpose,
                provider,
            )
        )
        digest = hmac.new(self._key, who.encode(), hashlib.sha256).hexdigest()[:40]
        return f"credit_bureau:report:{digest}"

    async def _cached(self, context: StepContext, key: str) -> BureauReport | None:
        assert context.shared is not None  # noqa: S101 - checked by the caller
        raw = await context.shared.get_value(key, at=context.clock.now())
        if raw is None:
            return None
        try:
            return BureauReport.from_data(json.loads(raw))
        except (ValueError, ProviderResponseError):
            log.warning("a cached bureau report could not be read; pulling afresh")
            return None

    @property
    def _lock_ttl(self) -> float:
        return max(self._wait, 1.0)

    async def _keep(self, context: StepContext, lock: str, owner: str) -> None:
        """Push the lock's expiry back every third of its ttl, while ``owner`` holds it."""
        assert context.shared is not None  # noqa: S101 - checked by the caller
        while True:
            await context.clock.sleep(self._lock_ttl / 3)
            at = context.clock.now()
            try:
                # One compare-and-set: a lock that lapsed and was taken over
                # meanwhile stays its new holder's.
                if not await context.shared.replace_value(
                    lock, owner, expected=owner, at=at, ttl=self._lock_ttl
                ):
                    return
            except StoreUnavailableError:
                # The pull goes on; the lock may lapse, as it would with its holder.
                log.warning(
                    "could not renew a bureau pull lock; the store is unavailable"
                )

    async def _lock(self, context: StepContext, lock: str, owner: str) -> bool:
        assert context.shared is not None  # noqa: S101 - checked by the caller
        at = context.clock.now()
        if await context.shared.put_value(
            lock, owner, at=at, ttl=self._lock_ttl, only_if_absent=True
        ):
            return True
        # A retry of the attempt that holds the lock (its first try crashed
        # or timed out): the idempotency key makes pulling again safe.
        return await context.shared.get_value(lock, at=at) == owner

    def _provider(self, name: str | None) -> BureauProvider:
        return step_provider(self._providers, name, kind="bureau")

    def _settings(self, options: Mapping[str, Any]) -> _Settings:
        problems = bureau_options_problems(options, {}, "options")
        if problems:
            raise _bad_option("; ".join(str(problem) for problem in problems))
        settings = self._default
        if "purpose" in options:
            settings = attrs.evolve(settings, purpose=str(options["purpose"]).strip())
        if "reuse_ttl" in options:
            settings = attrs.evolve(
                settings, reuse_ttl=parse_duration(options["reuse_ttl"])
            )
        if "min_score" in options:
            settings = attrs.evolve(settings, min_score=int(options["min_score"]))
        return settings
