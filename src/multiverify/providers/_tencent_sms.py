"""Tencent Cloud SMS ``SendSms`` (API 3.0, version 2021-01-11), signed with TC3 by ``TencentCloudApi``.

``SendSms`` (https://cloud.tencent.com/document/api/382/55981): host
``sms.tencentcloudapi.com``, service ``sms``, a region (``ap-guangzhou``);
request ``PhoneNumberSet`` (E.164), ``SmsSdkAppId``, ``SignName``,
``TemplateId``, ``TemplateParamSet`` (the template's ``{1}``, ``{2}``... in
order) and ``SessionContext`` (our reference, echoed back); the answer's
``SendStatusSet`` has one entry per number with ``SerialNo``, ``Fee`` (the
billed segments), ``Code`` (``Ok`` or a per-number error) and ``Message``.
An uncertain send is looked up with ``PullSmsSendStatusByPhoneNumber``
(https://www.tencentcloud.com/document/api/382/40518: ``BeginTime``,
``Offset``, ``Limit``, ``PhoneNumber``, ``SmsSdkAppId``; each record echoes
``SessionContext``, with ``ReportStatus`` ``SUCCESS`` or ``FAIL``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..exceptions import (
    ConfigurationError,
    ProviderError,
    ProviderNumberRejectedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from ._sms import SmsMessage, SmsReceipt
from ._tencent import TencentCloudApi

__all__ = ["TencentSms"]

_VERSION = "2021-01-11"
_SERVICE = "sms"

# Per-number codes about the number itself
# (https://cloud.tencent.com/document/api/382/55981#6.-.E9.94.99.E8.AF.AF.E7.A0.81).
_NUMBER = frozenset(
    {
        "InvalidParameterValue.IncorrectPhoneNumber",
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.PhoneNumberParseFail",
        "UnsupportedOperation.UnsupportedRegion",
    }
)
_PARAMS = ("code", "minutes")


class TencentSms:
    """Sends one-time codes through Tencent Cloud SMS with a registered template.

    Args:
        api: the signed Tencent Cloud API client (its ``region`` is required).
        sdk_app_id: the SMS application (``SmsSdkAppId``).
        sign_name: the approved signature (``SignName``), needed for mainland numbers.
        templates: the approved template id per locale, such as
            ``{"zh-CN": "1234567", "en": "1234568"}``; a locale without one
            uses the ``zh-CN`` template.
        params: what fills the template's ``{1}``, ``{2}``...: ``code`` and
            ``minutes``, in the template's order.
        host: the API host (``sms.intl.tencentcloudapi.com`` abroad).
        name: the provider's name in policies and results.

    Raises:
        ConfigurationError: no template for ``zh-CN``, an unknown parameter,
            or an API client without a region.
    """

    def __init__(
        self,
        api: TencentCloudApi,
        *,
        sdk_app_id: str,
        sign_name: str,
        templates: Mapping[str, str],
        params: Sequence[str] = _PARAMS,
        host: str = "sms.tencentcloudapi.com",
        name: str = "tencent",
    ) -> None:
        if "zh-CN" not in templates:
            raise ConfigurationError(
                message="TencentSms needs a registered template for zh-CN"
            )
        unknown = set(params) - set(_PARAMS)
        if unknown:
            raise ConfigurationError(
                message=f"TencentSms template params must be code or minutes, not {sorted(unknown)}"
            )
        if api.region is None:
            raise ConfigurationError(
                message="TencentSms needs an API client with a region"
            )
        self._api = api
        self._app = sdk_app_id
        self._sign_name = sign_name
        self._templates = dict(templates)
        self._params = tuple(params)
        self._host = host
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.TencentSms({self._name})>"

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: SmsMessage, /) -> SmsReceipt:
        """Call ``SendSms`` for one number.

        Raises:
            ProviderNumberRejectedError: Tencent refused the number.
            ProviderError: any other failure (the envelope's error, mapped by
                ``TencentCloudApi``, or the number's own ``Code``).
        """
        values = {"code": message.code, "minutes": str(message.ttl_minutes)}
        try:
            answer = await self._api.call(
                host=self._host,
                service=_SERVICE,
                action="SendSms",
                version=_VERSION,
                payload={
                    "PhoneNumberSet": [message.to],
                    "SmsSdkAppId": self._app,
                    "SignName": self._sign_name,
                    "TemplateId": self._templates.get(
                        message.locale, self._templates["zh-CN"]
                    ),
                    "TemplateParamSet": [values[p] for p in self._params],
                    "SessionContext": message.reference,
                },
            )
        except ProviderRejectedError as exc:
            if exc.code not in _NUMBER:
                raise
            # The number's error can come in the envelope too.
            raise ProviderNumberRejectedError(
                message=exc.message,
                provider=exc.provider,
                status_code=exc.status_code,
                code=exc.code,
                request_id=exc.request_id,
            ) from exc
        statuses = answer.get("SendStatusSet")
        status = statuses[0] if isinstance(statuses, list) and statuses else None
        if not isinstance(status, dict):
            raise ProviderUnavailableError(
                message=f"{self._name} answered SendSms with no SendStatusSet",
                provider=self._name,
                request_id=answer.get("RequestId"),
                uncertain=True,
            )
        code = str(status.get("Code", ""))
        if code != "Ok":
            raise self._number_error(code, str(status.get("Message", "")), answer)
        fee = status.get("Fee")
        return SmsReceipt(
            provider=self._name,
            message_id=str(status["SerialNo"]) if status.get("SerialNo") else None,
            status="accepted",
            segments=fee if isinstance(fee, int) and fee > 0 else None,
        )

    def _number_error(
        self, code: str, text: str, answer: Mapping[str, object]
    ) -> ProviderError:
        request_id = answer.get("RequestId")
        fields: dict[str, Any] = {
            "message": f"{self._name} refused the number: {code}: {text}",
            "provider": self._name,
            "status_code": 200,
            "code": code,
            "request_id": request_id if isinstance(request_id, str) else None,
        }
        if code in _NUMBER:
            return ProviderNumberRejectedError(**fields)
        if code.startswith("InternalError"):
            return ProviderUnavailableError(**fields, uncertain=True)
        # LimitExceeded.PhoneNumber*: a limit on the recipient, not throttling.
        return ProviderRejectedError(**fields)

    async def find(
        self, message: SmsMessage, /, *, sent_after: datetime
    ) -> SmsReceipt | None:
        """Find the send by its ``SessionContext`` among the number's delivery reports.

        A report of a failed delivery counts as not sent; no report yet
        (reports lag) counts as unknown, also ``None``.

        Raises:
            ProviderError: the query itself failed.
        """
        answer = await self._api.call(
            host=self._host,
            service=_SERVICE,
            action="PullSmsSendStatusByPhoneNumber",
            version=_VERSION,
            payload={
                "BeginTime": int(sent_after.timestamp()),
                "Offset": 0,
                "Limit": 100,
                "PhoneNumber": message.to,
                "SmsSdkAppId": self._app,
            },
        )
        records = answer.get("PullSmsSendStatusSet")
        for record in records if isinstance(records, list) else []:
            if (
                isinstance(record, dict)
                and record.get("SessionContext") == message.reference
                and record.get("ReportStatus") == "SUCCESS"
            ):
                serial = record.get("SerialNo")
                return SmsReceipt(
                    provider=self._name,
                    message_id=str(serial) if serial else None,
                    status="delivered",
                )
        return None

    async def aclose(self) -> None:
        """Close the API client's HTTP client if it made it."""
        await self._api.aclose()
