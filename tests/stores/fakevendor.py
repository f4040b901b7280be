"""A fake vendor on loopback for the fault tests: Twilio's Messages API and a report pull.

- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` records a text (``To``,
  ``Body``) and answers with a Message resource; ``GET`` on the same path
  lists the texts sent to ``To``, newest first (what
  ``TwilioMessaging.find`` reads);
- ``POST /pull`` answers with a report; each ``Idempotency-Key`` is billed
  once and later requests with it get the same report, as an idempotent
  API does.

Runs in a thread of the test process; every count is kept here.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class FakeVendor:
    """The server and what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict[str, str]] = []
        self.pulls: Counter[str] = Counter()  # billed pulls by idempotency key
        self.pull_requests = 0
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = dict(parse_qsl(urlsplit(self.path).query))
                with vendor.lock:
                    listed = [
                        m
                        for m in reversed(vendor.messages)
                        if m["to"] == query.get("To")
                    ]
                self._answer(
                    200, {"messages": listed[: int(query.get("PageSize", 50))]}
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                if self.path == "/pull":
                    key = self.headers.get("Idempotency-Key", "")
                    with vendor.lock:
                        vendor.pull_requests += 1
                        if key not in vendor.pulls:
                            vendor.pulls[key] += 1
                    self._answer(200, {"report_id": f"r-{key}"})
                    return
                form = dict(parse_qsl(body))
                with vendor.lock:
                    sid = f"SM{len(vendor.messages):032d}"
                    vendor.messages.append(
                        {
                            "sid": sid,
                            "to": form["To"],
                            "body": form["Body"],
                            "status": "queued",
                        }
                    )
                self._answer(201, {"sid": sid, "status": "queued", "num_segments": "1"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Serve in a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def texts_to(self, number: str) -> list[str]:
        """Every text sent to ``number``, oldest first."""
        with self.lock:
            return [m["body"] for m in self.messages if m["to"] == number]
