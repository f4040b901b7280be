"""Type-checked, never run: the webhook app as an app wires it, on either runtime."""

from __future__ import annotations

from starlette.applications import Starlette
from temporalio.client import Client

from multiverify import Policy, Verifier
from multiverify.asgi import Rejection, Runtime, create_app
from multiverify.stores import SqliteStore
from multiverify.temporal import TemporalVerifier
from multiverify.webhooks import (
    TwilioMessageStatus,
    TwilioSignature,
    TwilioVoiceWebhook,
    VeriffWebhooks,
    VonageSignature,
    VonageVoiceWebhook,
)


async def log_rejection(rejection: Rejection) -> None:
    """Send a refused callback to the security log."""
    del rejection


def webhook_app(runtime: Runtime) -> Starlette:
    """Every vendor route, behind a proxy at a known public URL."""
    twilio = TwilioSignature("auth-token")
    return create_app(
        runtime,
        webhooks=[
            TwilioVoiceWebhook(twilio),
            TwilioMessageStatus(twilio),
            VonageVoiceWebhook(VonageSignature("secret"), callback_key="key"),
            VeriffWebhooks("shared-secret", api_key="key"),
        ],
        public_base_url="https://verify.example.com",
        on_rejected=[log_rejection],
    )


async def both_runtimes(policy: Policy, client: Client) -> list[Starlette]:
    """The embedded Verifier and the TemporalVerifier are both runtimes of the app."""
    async with SqliteStore("sessions.db") as store:
        embedded = Verifier(policy, channels=[], store=store)
        temporal = TemporalVerifier(client, policy, store=store)
        return [webhook_app(embedded), webhook_app(temporal)]
