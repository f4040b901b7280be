"""The webhook and code-submission app: vendor callbacks and applicant input from any replica (the ``asgi`` extra).

[`create_app`][multiverify.asgi.create_app] builds a Starlette app that
mounts one route per vendor webhook handler and the applicant's
code-submission route, and hands what they receive to a
[`Runtime`][multiverify.asgi.Runtime]: the embedded
[`Verifier`][multiverify.Verifier] or a
[`TemporalVerifier`][multiverify.temporal.TemporalVerifier]. Run it with any
ASGI server, or mount it inside the lending app's own.
"""

from __future__ import annotations

from ._app import (
    OnRejected,
    Rejection,
    Runtime,
    client_address,
    create_app,
    public_url,
)

__all__ = [
    "OnRejected",
    "Rejection",
    "Runtime",
    "client_address",
    "create_app",
    "public_url",
]
