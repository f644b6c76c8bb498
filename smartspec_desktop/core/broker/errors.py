"""The error answers the broker gives OpenCode, shaped so OpenCode fails the turn with one line.

Measured with OpenCode 1.18.33 against a local stand-in (``tests/integration/
test_broker_opencode.py`` keeps the decisive cases):

* 200 ``text/event-stream`` with ``data: {"error": "<string>"}`` (the real backend's defect):
  the turn fails with ``UnknownError`` and a ~30-line Zod dump around the message (no retry).
* 200 SSE with ``data: {"error": {"message", "type": "server_error", …}}``: **retried** 5 times
  with back-off (~30 s), then given up; the message shown is the JSON of the object.
* HTTP 400 or 402 with an OpenAI error body: retried too *when* the body or message matches
  OpenCode's retry patterns (``server_error``, ``internal error``, ``500``, ``rate limit``,
  ``fetch failed``, … : see ``RETRY_PATTERNS``, copied from the 1.18.33 binary's ``retryable``);
  otherwise the turn fails at once with ``APIError`` whose message is exactly ``error.message``.

So every error the broker makes itself is an HTTP 400 JSON answer (401 for a wrong token or no
key; 402 is left to the backend's "insufficient credits", which the app already reads as such)
``{"error": {"message": M, "type": "invalid_request_error", "code": C}}`` with ``C`` one of
``smartspec_gateway_defect``, ``smartspec_budget_reached``, ``smartspec_broker_auth``, … and ``M``
*defused* (:func:`defuse`): a word joiner (U+2060, invisible) is put inside every fragment that
would match a retry pattern, so a backend message like "Internal Server Error" cannot start a
retry storm. When the stream has already begun (headers and some chunks sent), the error goes out
as one ``data: {"error": {…}}`` chunk with the same defused object (no retry; the message shown
is that object as JSON) and the stream ends.
"""

from __future__ import annotations

import json
import re

WORD_JOINER = "\u2060"

#: OpenCode 1.18.33's retry patterns (``Rd`` in its bundle, checked against both the message and
#: the raw response body of a failed call).
RETRY_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"429|500|502|503|504|524",
        r"rate increased too quickly|rate limit|rate-limit|rate_limit|too many requests",
        r"overloaded|service unavailable|service_unavailable|service-unavailable|internal error"
        r"|internal_error|internal server error|server error|server_error|server-error"
        r"|provider returned error|provider_returned_error|provider-returned-error",
        r"terminated|fetch failed|failed to fetch|network[-_\s]error|upstream connect"
        r"|connection error|connection refused|connection lost|socket connection was closed"
        r"|socket hang up|reset before headers|getaddrinfo|enotfound|eai_again|econnrefused"
        r"|econnreset|etimedout",
        r"^timeout$|\b(?:request|response|connection|network|stream|read)"
        r" (?:timeout|timed out|time out)\b",
        r"try your request again|retry your request|resource exhausted|resource_exhausted",
        r"\btry again",
        r"too_many_requests|exhausted|unavailable",
    )
]

GATEWAY_DEFECT = "smartspec_gateway_defect"
BUDGET_REACHED = "smartspec_budget_reached"
BROKER_AUTH = "smartspec_broker_auth"
NO_KEY = "smartspec_no_key"
NOT_ALLOWED = "smartspec_path_not_allowed"
TOO_LARGE = "smartspec_too_large"
BACKEND_UNREACHABLE = "smartspec_backend_unreachable"


def defuse(text: str) -> str:
    """``text`` with a word joiner inside each fragment OpenCode would take as "retry this"."""
    for _ in range(8):  # a fragment can hide another one; a few passes are plenty
        changed = False
        for pattern in RETRY_PATTERNS:
            m = pattern.search(text)
            while m is not None:
                start, end = m.span()
                if end - start < 2:
                    break
                text = text[: start + 1] + WORD_JOINER + text[start + 1 :]
                changed = True
                m = pattern.search(text, start + 2)
        if not changed:
            return text
    return text


def would_retry(text: str) -> bool:
    return any(p.search(text) for p in RETRY_PATTERNS)


def error_object(message: str, code: str) -> dict[str, object]:
    return {"message": defuse(message), "type": "invalid_request_error", "code": code}


def error_body(message: str, code: str) -> bytes:
    """The JSON body of an error answer (see the module docstring)."""
    return json.dumps({"error": error_object(message, code)}).encode("utf-8")


def error_chunk(message: str, code: str) -> bytes:
    """An SSE event carrying the error object, for a stream already under way."""
    return b"data: " + json.dumps({"error": error_object(message, code)}).encode("utf-8") + b"\n\n"


def gateway_failure(own_message: str, backend_url: str) -> str:
    """The one line for a defect of the backend's gateway (the issue's wording)."""
    own = " ".join(own_message.split())[:500].rstrip(".") or "no message"
    return (
        f"The SmartSpecPro gateway failed: {own}. This is a defect of the backend at "
        f"{backend_url}, not of your workspace."
    )
