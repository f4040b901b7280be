"""The one-time-code texts the SMS provider tests send."""

from __future__ import annotations

from multiverify.providers import SmsMessage

ZH_MESSAGE = SmsMessage(
    to="+8613800138000",
    text="【Acme】您的验证码为123456，5分钟内有效",  # noqa: RUF001 - Chinese punctuation
    code="123456",
    ttl_minutes=5,
    locale="zh-CN",
    reference="s1:sms:1:1",
)
"""A mainland number, the Chinese template."""

EN_MESSAGE = SmsMessage(
    to="+14155550123",
    text="Acme: your verification code is 123456.",
    code="123456",
    ttl_minutes=5,
    locale="en",
    reference="s1:sms:1:1",
    status_callback="https://app.example/twilio/sms?session_id=s1&step_id=sms&attempt=1",
)
"""A US number, the English template, a delivery callback."""
