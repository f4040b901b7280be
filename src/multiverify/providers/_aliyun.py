"""Alibaba Cloud SMS (Dysmsapi ``SendSms``), with both of Alibaba's request signatures.

``SendSms`` (https://help.aliyun.com/document_detail/55284.html; English:
https://help.aliyun.com/en/sms/developer-reference/api-dysmsapi-2017-05-25-sendsms):
host ``dysmsapi.aliyuncs.com``, version ``2017-05-25``; parameters
``PhoneNumbers``, ``SignName``, ``TemplateCode``, ``TemplateParam`` (a JSON
string) and ``OutId`` (our reference, echoed in delivery reports); the
answer is ``{"Code": "OK", "Message", "BizId", "RequestId"}``. Business
errors come back as HTTP 200 with another ``Code``
(https://help.aliyun.com/en/sms/developer-reference/error-codes); gateway
errors (signature, throttling) with a 4xx or 5xx and the same envelope.
``SendSms`` is not idempotent: an uncertain send is looked up with
``QuerySendDetails`` (https://help.aliyun.com/document_detail/419277.html:
``PhoneNumber``, ``SendDate`` ``yyyyMMdd``, ``PageSize`` up to 50,
``CurrentPage``; each record has ``OutId`` and ``SendStatus`` 1 waiting,
2 failed, 3 delivered) before anything is sent again.

Signatures:

- RPC (V2, https://www.alibabacloud.com/help/en/sdk/product-overview/rpc-mechanism):
  every parameter but ``Signature``, sorted by name, percent-encoded
  (RFC 3986: ``A-Za-z0-9-_.~`` kept, space ``%20``) and joined as
  ``k=v&...``; ``StringToSign = METHOD&%2F&percentEncode(that)``;
  ``Signature = base64(HMAC-SHA1(secret + "&", StringToSign))``.
- V3 (https://help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature):
  ``CanonicalRequest`` = method, path, sorted query, the signed headers
  (``host``, ``content-type`` and every ``x-acs-*``, lowercased, sorted,
  ``name:value`` lines), their names ``;``-joined, and the hex SHA-256 of
  the body; ``StringToSign = "ACS3-HMAC-SHA256\\n" + hex(sha256(CanonicalRequest))``;
  the signature is hex HMAC-SHA256 with the raw secret, sent as
  ``Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<names>,Signature=<hex>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote

import httpx

from .._clock import Clock, SystemClock
from .._http import exchange
from ..exceptions import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from ._sms import SmsMessage, SmsReceipt

__all__ = [
    "AliyunSms",
    "acs3_authorization",
    "percent_encode",
    "rpc_signature",
    "rpc_string_to_sign",
]

_VERSION = "2017-05-25"
_ACS3 = "ACS3-HMAC-SHA256"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Send dates are the account's, in China Standard Time.
_CHINA = timezone(timedelta(hours=8))


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding over UTF-8, as Alibaba's signatures use it."""
    return quote(value, safe="-_.~")


def _canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{percent_encode(name)}={percent_encode(params[name])}"
        for name in sorted(params)
    )


def rpc_string_to_sign(params: Mapping[str, str], *, method: str = "GET") -> str:
    """The RPC (V2) string to sign for these parameters (``Signature`` left out)."""
    query = _canonical_query({k: v for k, v in params.items() if k != "Signature"})
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(query)}"


def rpc_signature(
    params: Mapping[str, str], *, secret: str, method: str = "GET"
) -> str:
    """The RPC (V2) ``Signature`` of a request with these parameters.

    >>> rpc_signature({"AccessKeyId": "testid", "Action": "DescribeRegions",
    ...     "Format": "XML", "SignatureMethod": "HMAC-SHA1",
    ...     "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    ...     "SignatureVersion": "1.0", "Timestamp": "2016-02-23T12:46:24Z",
    ...     "Version": "2014-05-26"}, secret="testsecret")
    'OLeaidS1JvxuMvnyHOwuJ+uX5qY='
    """
    digest = hmac.new(
        f"{secret}&".encode(),
        rpc_string_to_sign(params, method=method).encode(),
        hashlib.sha1,
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _acs3_canonical(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload: bytes,
) -> tuple[str, str]:
    signed = {"host": host.strip()}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-acs-") or lower == "content-type":
            signed[lower] = value.strip()
    names = sorted(signed)
    canonical = "\n".join(
        [
            method.upper(),
            path,
            _canonical_query(query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    return canonical, ";".join(names)


def acs3_authorization(
    *,
    access_key_id: str,
    access_key_secret: str,
    method: str,
    host: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload: bytes = b"",
    path: str = "/",
) -> str:
    """The V3 ``Authorization`` header (ACS3-HMAC-SHA256) of one request.

    ``headers`` are the request's own headers: ``x-acs-*`` (action, version,
    date, nonce, ``x-acs-content-sha256``) and ``content-type`` are signed
    with ``host``; ``payload`` is the exact body.
    """
    canonical, names = _acs3_canonical(
        method=method,
        host=host,
        path=path,
        query=query,
        headers=headers,
        payload=payload,
    )
    to_sign = f"{_ACS3}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(
        access_key_secret.encode(), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    return f"{_ACS3} Credential={access_key_id},SignedHeaders={names},Signature={signature}"


# Codes by how they are handled; the rest are permanent rejections.
_NUMBER = frozenset(
    {"isv.MOBILE_NUMBER_ILLEGAL", "isv.BLACK_KEY_CONTROL_LIMIT", "isv.MOBILE_IN_BLACK"}
)
_AUTH = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "isp.RAM_PERMISSION_DENY",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.ACCOUNT_ABNORMAL",
    }
)
# Refused before anything happened, worth a new signature: not uncertain.
_RESIGN = frozenset({"SignatureNonceUsed", "InvalidTimeStamp.Expired"})
_UNAVAILABLE = frozenset(
    {"isp.SYSTEM_ERROR", "InternalError", "ServiceUnavailable", "isp.GATEWAY_ERROR"}
)


def _error(
    provider: str,
    code: str,
    message: str,
    *,
    status: int,
    request_id: str | None,
) -> ProviderError:
    fields: dict[str, Any] = {
        "message": f"{provider} refused the request: {code}: {message}",
        "provider": provider,
        "status_code": status,
        "code": code,
        "request_id": request_id,
    }
    if code.startswith("Throttling") or status == httpx.codes.TOO_MANY_REQUESTS:
        return ProviderRateLimitedError(**fields)
    if code in _NUMBER:
        return ProviderNumberRejectedError(**fields)
    if code in _AUTH or status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        return ProviderAuthError(**fields)
    if code in _RESIGN:
        return ProviderUnavailableError(**fields)
    if code in _UNAVAILABLE or status >= httpx.codes.INTERNAL_SERVER_ERROR:
        return ProviderUnavailableError(**fields, uncertain=True)
    return ProviderRejectedError(**fields)


def _number(e164: str) -> str:
    """Mainland numbers as 11 digits, others as country code and number without ``+``."""
    digits = e164.removeprefix("+")
    return digits.removeprefix("86") if digits.startswith("86") else digits


class AliyunSms:
    """Sends one-time codes through Alibaba Cloud SMS with a registered template.

    Args:
        access_key_id: the AccessKey id.
        access_key_secret: the AccessKey secret.
        sign_name: the approved signature (``SignName``), shown as 【...】.
        templates: the approved template code (``TemplateCode``) per locale,
            such as ``{"zh-CN": "SMS_123", "en": "SMS_456"}``; a locale
            without one uses the ``zh-CN`` template.
        code_param: the template's variable for the code (``${code}``).
        minutes_param: the template's variable for the validity in
            minutes, if it has one.
        signature: ``acs3`` (V3, the default) or ``rpc`` (V2, HMAC-SHA1).
        endpoint: the API host.
        client: an HTTP client to use (left open); one is made and closed otherwise.
        clock: the time source for timestamps.
        new_nonce: makes each request's signature nonce.
        name: the provider's name in policies and results.

    Raises:
        ConfigurationError: no template for ``zh-CN``, or an unknown signature.
    """

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        templates: Mapping[str, str],
        code_param: str = "code",
        minutes_param: str | None = None,
        signature: Literal["acs3", "rpc"] = "acs3",
        endpoint: str = "dysmsapi.aliyuncs.com",
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        new_nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
        name: str = "aliyun",
    ) -> None:
        if "zh-CN" not in templates:
            raise ConfigurationError(
                message="AliyunSms needs a registered template for zh-CN"
            )
        if signature not in ("acs3", "rpc"):
            raise ConfigurationError(
                message=f"unknown Alibaba signature {signature!r} (acs3 or rpc)"
            )
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._sign_name = sign_name
        self._templates = dict(templates)
        self._code_param = code_param
        self._minutes_param = minutes_param
        self._signature = signature
        self._host = endpoint
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._new_nonce = new_nonce
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.AliyunSms({self._name}, {self._signature})>"

    @property
    def name(self) -> str:
        return self._name

    def _timestamp(self) -> str:
        return self._clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        if self._signature == "rpc":
            signed = {
                **params,
                "AccessKeyId": self._key_id,
                "Action": action,
                "Format": "JSON",
                "RegionId": "cn-hangzhou",
                "SignatureMethod": "HMAC-SHA1",
                "SignatureNonce": self._new_nonce(),
                "SignatureVersion": "1.0",
                "Timestamp": self._timestamp(),
                "Version": _VERSION,
            }
            signature = rpc_signature(signed, secret=self._secret, method="GET")
            query = _canonical_query({**signed, "Signature": signature})
            return self._client.build_request(
                "GET",
                f"https://{self._host}/?{query}",
                headers={"Accept": "application/json"},
            )
        headers = {
            "x-acs-action": action,
            "x-acs-version": _VERSION,
            "x-acs-date": self._timestamp(),
            "x-acs-signature-nonce": self._new_nonce(),
            "x-acs-content-sha256": _EMPTY_SHA256,
        }
        headers["Authorization"] = acs3_authorization(
            access_key_id=self._key_id,
            access_key_secret=self._secret,
            method="POST",
            host=self._host,
            query=params,
            headers=headers,
        )
        return self._client.build_request(
            "POST",
            f"https://{self._host}/?{_canonical_query(params)}",
            headers={**headers, "Accept": "application/json"},
        )

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        response = await exchange(
            self._client, self._name, self._request(action, params)
        )
        try:
            data = response.json()
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                message=f"{self._name} answered {action} with HTTP "
                f"{response.status_code} and no JSON object",
                provider=self._name,
                status_code=response.status_code,
                uncertain=response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR,
            )
        code = str(data.get("Code", ""))
        if code != "OK" or not response.is_success:
            raise _error(
                self._name,
                code or f"HTTP{response.status_code}",
                str(data.get("Message", "")),
                status=response.status_code,
                request_id=data.get("RequestId"),
            )
        return data

    async def send(self, message: SmsMessage, /) -> SmsReceipt:
        """Call ``SendSms`` with the locale's template.

        Raises:
            ProviderNumberRejectedError: Alibaba refused the number.
            ProviderError: any other failure, mapped from ``Code``.
        """
        template = self._templates.get(message.locale, self._templates["zh-CN"])
        values = {self._code_param: message.code}
        if self._minutes_param is not None:
            values[self._minutes_param] = str(message.ttl_minutes)
        data = await self._call(
            "SendSms",
            {
                "PhoneNumbers": _number(message.to),
                "SignName": self._sign_name,
                "TemplateCode": template,
                "TemplateParam": json.dumps(
                    values, separators=(",", ":"), ensure_ascii=False
                ),
                "OutId": message.reference,
            },
        )
        biz_id = data.get("BizId")
        return SmsReceipt(
            provider=self._name,
            message_id=str(biz_id) if biz_id else None,
            status="accepted",
        )

    async def find(
        self, message: SmsMessage, /, *, sent_after: datetime
    ) -> SmsReceipt | None:
        """Find the send by its ``OutId`` with ``QuerySendDetails``.

        A record that failed to deliver counts as not sent.

        Raises:
            ProviderError: the query itself failed.
        """
        data = await self._call(
            "QuerySendDetails",
            {
                "PhoneNumber": _number(message.to),
                "SendDate": sent_after.astimezone(_CHINA).strftime("%Y%m%d"),
                "PageSize": "50",
                "CurrentPage": "1",
            },
        )
        details = data.get("SmsSendDetailDTOs")
        records = details.get("SmsSendDetailDTO") if isinstance(details, dict) else None
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, dict) or record.get("OutId") != message.reference:
                continue
            status = str(record.get("SendStatus"))
            if status == "2":
                return None
            return SmsReceipt(
                provider=self._name,
                status="delivered" if status == "3" else "sending",
            )
        return None

    async def aclose(self) -> None:
        """Close the HTTP client if this provider made it."""
        if self._owns_client:
            await self._client.aclose()
