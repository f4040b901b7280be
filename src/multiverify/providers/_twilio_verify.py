"""Twilio Verify v2: the vendor generates, sends and checks the code.

Wire format, from the official spec ``spec/json/twilio_verify_v2.json`` of
``twilio/twilio-oai`` and https://www.twilio.com/docs/verify/api:

- start: ``POST /v2/Services/{ServiceSid}/Verifications`` with ``To``,
  ``Channel=sms``, ``Locale`` and ``DeviceIp``; the answer's ``sid`` names
  the verification (``status`` ``pending``).
- check: ``POST /v2/Services/{ServiceSid}/VerificationCheck`` with ``Code``
  and ``VerificationSid`` (or ``To``): ``status`` ``approved`` for the right
  code, HTTP 200 ``pending`` for a wrong one; 404 (error 20404) once the
  verification expired, was approved or cancelled; 429 error 60202 after
  five wrong codes.
- cancel: ``POST /v2/Services/{ServiceSid}/Verifications/{Sid}`` with
  ``Status=canceled``.

Error codes: https://www.twilio.com/docs/verify/return-and-error-codes.
A new verification for a number that has a pending one re-sends the same
code, so the channel cancels the old one first when it wants a new code.
"""

from __future__ import annotations

import httpx

from ..exceptions import ProviderRejectedError, ProviderResponseError
from ._sms import CheckOutcome, VerifyCheck, VerifyRequest, VerifyStarted
from ._twilio import TwilioAccount
from ._twilio_messaging import number_rejected

__all__ = ["TwilioVerify"]

_GONE = "20404"
_MAX_CHECKS = "60202"


class TwilioVerify:
    """Twilio Verify v2 with the SMS channel.

    Args:
        account: the Twilio account (credentials and HTTP client).
        service_sid: the Verify Service (``VA...``); its settings fix the
            code length and the code's lifetime (10 minutes by default), so
            set the channel's ``code_length`` to the Service's.
        name: the provider's name in policies and results.
    """

    def __init__(
        self, account: TwilioAccount, *, service_sid: str, name: str = "twilio-verify"
    ) -> None:
        self._account = account
        self._service = service_sid
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.TwilioVerify({self._name})>"

    @property
    def name(self) -> str:
        return self._name

    def _url(self, path: str) -> str:
        return f"{self._account.verify_base}/v2/Services/{self._service}/{path}"

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        """Create a verification; Twilio sends its code.

        Raises:
            ProviderNumberRejectedError: Twilio refused the number (a
                landline, an invalid number).
            ProviderResponseError: a success answer without the
                verification's ``sid``.
            ProviderError: any other failure.
        """
        form = {"To": request.to, "Channel": "sms", "Locale": request.locale}
        if request.client_ip is not None:
            form["DeviceIp"] = request.client_ip
        try:
            data = await self._account.request(
                "POST", self._url("Verifications"), form=form
            )
        except ProviderRejectedError as exc:
            raise number_rejected(exc) from exc
        sid = data.get("sid")
        if not isinstance(sid, str) or not sid:
            # Twilio took the request (2xx) and may have sent the code.
            raise ProviderResponseError(
                message=f"{self._name} answered a start without a verification sid",
                provider=self._name,
                field="sid",
                uncertain=True,
            )
        return VerifyStarted(provider=self._name, verification_id=sid)

    async def check(
        self, verification_id: str, code: str, /, *, to: str
    ) -> VerifyCheck:
        """Check a code against the verification.

        Raises:
            ProviderError: a failure other than a wrong, expired or
                exhausted code.
        """
        del to  # the verification's sid names the number
        form = {"Code": code, "VerificationSid": verification_id}
        try:
            data = await self._account.request(
                "POST", self._url("VerificationCheck"), form=form
            )
        except ProviderRejectedError as exc:
            if exc.code == _GONE or exc.status_code == httpx.codes.NOT_FOUND:
                return VerifyCheck(outcome=CheckOutcome.EXPIRED, status="not_found")
            if exc.code == _MAX_CHECKS:
                return VerifyCheck(
                    outcome=CheckOutcome.EXHAUSTED, status="max_attempts_reached"
                )
            raise
        status = str(data.get("status", ""))
        if status == "approved" and data.get("valid", True) is not False:
            return VerifyCheck(outcome=CheckOutcome.APPROVED, status=status)
        if status in ("canceled", "expired", "deleted", "failed"):
            return VerifyCheck(outcome=CheckOutcome.EXPIRED, status=status)
        if status == "max_attempts_reached":
            return VerifyCheck(outcome=CheckOutcome.EXHAUSTED, status=status)
        return VerifyCheck(outcome=CheckOutcome.WRONG, status=status)

    async def cancel(self, verification_id: str, /) -> None:
        """Cancel the verification; one already gone is left alone."""
        try:
            await self._account.request(
                "POST",
                self._url(f"Verifications/{verification_id}"),
                form={"Status": "canceled"},
            )
        except ProviderRejectedError as exc:
            if exc.code != _GONE and exc.status_code != httpx.codes.NOT_FOUND:
                raise

    async def aclose(self) -> None:
        """Close the account's HTTP client if the account made it."""
        await self._account.aclose()
