"""Client for the SmartSpecPro backend (see shared/notes/backend-contract.md).

Blocking httpx calls; the window runs them on worker threads. Every call has a per-read timeout,
a **total** deadline and a size limit (the answer is streamed and reading stops at
``max_bytes``), so a backend that drips one byte every few seconds or sends a huge answer gives a
clear error in seconds, not a hang or gigabytes of memory. A 429 (the real service sends no
``Retry-After``) is waited out with a bounded backoff and really retried; when the budget is used
up the error says plainly that the app stopped trying. Every failure becomes a typed error with a
message naming the problem and the fix. Keys and tokens are never put into error text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartspec_desktop.core.errors import (
    ApiKeyInvalid,
    ApiKeyRejected,
    AuthRequired,
    BackendError,
    BackendUnreachable,
    GatewayError,
    InsufficientCredits,
    RateLimited,
)
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.storage.secrets import key_fix, source_text

if TYPE_CHECKING:
    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

log = logging.getLogger(__name__)

#: Per read, and to connect (s); an ``httpx.Timeout`` made when a client is (httpx is lazy).
DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT = 10.0, 5.0
#: Total time one call may take, whatever the per-read timeout (F9: a slow drip must not hang).
DEFAULT_DEADLINE = 20.0
#: The largest answer read (F9: a 600 MiB models answer once took 8.6 GB of memory).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: How long one call may spend waiting out 429s (backoff 1, 2, 4, 8 s … without Retry-After).
DEFAULT_RATE_LIMIT_WAIT = 20.0
RATE_LIMIT_FIX = (
    "The backend allows 60 requests a minute from this computer, shared with OpenCode's LLM "
    "calls: wait a minute, then try again."
)


@dataclass(frozen=True)
class Login:
    access_token: str
    expires_in: int
    user: dict[str, Any]


@dataclass(frozen=True)
class CreatedKey:
    id: str
    name: str
    key: str
    key_prefix: str
    expires_at: str | None


def retry_after_seconds(response: httpx.Response, default: float = 60.0) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def key_matches_prefix(key: str, key_prefix: str) -> bool:
    """Whether a raw key is the one a key list shows as ``key_prefix``
    (``sk-smartspec-zDA...DpQ8``: the first 16 and the last 4 characters)."""
    head, sep, tail = key_prefix.partition("...")
    if not sep or not head or not tail:
        return False
    return key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail)


def looks_like_email(text: str) -> bool:
    """The backend validates logins as e-mail addresses (422 otherwise); check first."""
    local, at, domain = text.strip().rpartition("@")
    return bool(
        at and local and "." in domain.strip(".") and not any(c.isspace() for c in text.strip())
    )


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for k in ("detail", "message", "error"):
            v = body.get(k)
            if isinstance(v, str):
                return v
        if isinstance(body.get("detail"), list):
            return "; ".join(str(d.get("msg", d)) for d in body["detail"] if isinstance(d, dict))
    return str(body)[:200]


class BackendClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: httpx.Timeout | float | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_bytes: int = MAX_ANSWER_BYTES,
        rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT,
        on_wait: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.deadline = float(deadline)
        self.max_bytes = int(max_bytes)
        self.rate_limit_wait = float(rate_limit_wait)
        #: Told (one line) each time a 429 is waited out, before the retry.
        self.on_wait = on_wait
        self._sleep = sleep
        if timeout is None:
            timeout = httpx.Timeout(DEFAULT_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT)
        t = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(float(timeout))
        # No single read may outlast the whole deadline.
        cap = self.deadline
        self._timeout = httpx.Timeout(
            connect=min(t.connect or cap, cap),
            read=min(t.read or cap, cap),
            write=min(t.write or cap, cap),
            pool=min(t.pool or cap, cap),
        )
        # trust_env=False: a system proxy must not see loopback traffic or our credentials
        # unless the backend is remote; for remote backends proxies are honoured.
        remote = not any(h in self.base_url for h in ("://localhost", "://127.", "://[::1]"))
        self._http = httpx.Client(base_url=self.base_url, timeout=self._timeout, trust_env=remote)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gateway_url(self) -> str:
        return f"{self.base_url}/v1/opencode"

    # --------------------------------------------------------------------------------- plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        bearer: str | None = None,
        credential: str = "api_key",
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        content: bytes | None = None
        if method in ("POST", "PUT", "PATCH"):
            # The backend rejects a POST without Content-Type even when the body is empty.
            headers["Content-Type"] = "application/json"
            content = httpx.Request(
                "POST", "/", json=json_body if json_body is not None else {}
            ).content
        waited = 0.0
        attempt = 1
        while True:
            r = self._send(method, path, headers, content, params)
            if r.status_code != 429:
                break
            wait = self._rate_limit_pause(r, attempt, waited, path)  # raises when out of budget
            line = (
                f"Rate limited by the SmartSpecPro backend; waiting {wait:.0f} s, then trying "
                f"again (attempt {attempt + 1})."
            )
            log.info("%s", line)
            if self.on_wait is not None:
                self.on_wait(line)
            self._sleep(wait)
            waited += wait
            attempt += 1
        if r.status_code < 400:
            if r.status_code == 204 or not r.content:
                return None
            try:
                return r.json()
            except ValueError:
                raise BackendError(
                    f"The backend at {self.base_url} sent a response that is not JSON for {path}.",
                    "Check that the backend URL points at SmartSpecPro, not another service.",
                    status=r.status_code,
                ) from None
        raise self._error(r, path, credential, source)

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        params: dict[str, Any] | None,
    ) -> httpx.Response:
        """One HTTP exchange, streamed: within ``deadline`` in all and ``max_bytes`` at most.
        Returns a response whose body is already read."""
        started = time.monotonic()
        try:
            with self._http.stream(
                method, path, headers=headers, content=content, params=params
            ) as r:
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _TooLarge()
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise _TooLarge()
                    if time.monotonic() - started > self.deadline:
                        raise _TooSlow()
                if time.monotonic() - started > self.deadline:
                    raise _TooSlow()
                # The body is decoded already: drop the headers that describe the raw one.
                raw_only = ("content-encoding", "content-length", "transfer-encoding")
                kept = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in raw_only]
                return httpx.Response(
                    r.status_code, headers=kept, content=bytes(body), request=r.request
                )
        except _TooLarge:
            mib = self.max_bytes / (1024 * 1024)
            raise BackendError(
                f"The backend at {self.base_url} sent more than {mib:.0f} MiB for {path}; this "
                "app stopped reading it.",
                "Check that the backend URL (Settings or --backend-url) points at SmartSpecPro, "
                "not another service.",
            ) from None
        except (_TooSlow, httpx.TimeoutException):
            raise BackendUnreachable(
                f"The SmartSpecPro backend at {self.base_url} did not answer in time (no "
                f"complete answer to {path} within {self.deadline:.0f} s).",
                "Check your connection and that the backend is running, then try again.",
            ) from None
        except httpx.HTTPError as e:
            raise BackendUnreachable(
                f"Cannot reach the SmartSpecPro backend at {self.base_url} ({type(e).__name__}).",
                "Check the backend URL (Settings or --backend-url) and that the service is "
                "running.",
            ) from None

    def _rate_limit_pause(self, r: httpx.Response, attempt: int, waited: float, path: str) -> float:
        """How long to wait before retrying a 429, or raise RateLimited when out of budget."""
        header = r.headers.get("retry-after")
        asked = retry_after_seconds(r, default=-1.0) if header else -1.0
        wait = asked if asked >= 0 else float(min(2 ** (attempt - 1), 8))
        if waited + wait <= self.rate_limit_wait:
            return wait
        if asked >= 0 and waited == 0:
            raise RateLimited(
                f"Rate limited by the SmartSpecPro backend: it asks to wait {asked:.0f} s, longer "
                f"than this app waits ({self.rate_limit_wait:.0f} s), so it stopped.",
                RATE_LIMIT_FIX,
                retry_after=asked,
            )
        tries = "once" if attempt == 1 else f"{attempt} times"
        over = f" over {waited:.0f} s" if waited else ""
        raise RateLimited(
            f"Rate limited by the SmartSpecPro backend: it refused {path} {tries}{over}, so "
            "this app stopped trying.",
            RATE_LIMIT_FIX,
            retry_after=asked if asked >= 0 else 60.0,
        )

    def _error(
        self, r: httpx.Response, path: str, credential: str, source: str | None = None
    ) -> BackendError:
        detail = _detail(r)
        status = r.status_code
        if status == 429:  # only reached with a zero wait budget
            wait = retry_after_seconds(r)
            return RateLimited(
                "Rate limited by the SmartSpecPro backend, so this app stopped.",
                RATE_LIMIT_FIX,
                retry_after=wait,
            )
        if status == 401:
            if credential == "api_key":
                where = f" from {source_text(source)}" if source else ""
                return ApiKeyRejected(
                    f"The SmartSpecPro backend rejected the API key{where} ({detail}).",
                    key_fix(source) + " Revoked or rotated keys stop working at once.",
                )
            return AuthRequired(
                f"Your SmartSpecPro sign-in is not valid any more ({detail}).",
                "Sign in again (sessions last 30 minutes).",
                status=401,
            )
        if status == 402:
            return InsufficientCredits(
                f"Insufficient credits ({detail}).",
                "Add credits to your SmartSpecPro account.",
                status=402,
            )
        if status == 403:
            return BackendError(
                f"The backend refused the request ({detail}).",
                "Check that your account is active, or contact SmartSpecPro support.",
                status=403,
            )
        if status >= 500:
            cls = GatewayError if path.startswith("/v1/opencode") else BackendError
            return cls(
                f"The SmartSpecPro backend failed ({status}: {detail}).",
                "This is a problem of the service; try again later.",
                status=status,
            )
        return BackendError(
            f"The backend answered {status} for {path}: {detail}.",
            "Check the backend URL and the app version.",
            status=status,
        )

    # -------------------------------------------------------------------------------- gateway

    def gateway_health(self) -> dict[str, Any]:
        data = self._request("GET", "/v1/opencode/health")
        if not isinstance(data, dict) or data.get("status") != "ok":
            raise BackendError(
                f"The SmartSpecPro gateway at {self.base_url} reports it is not healthy ({data}).",
                "Try again later, or check the backend's logs.",
            )
        return data

    def models(self, api_key: str, source: str | None = None) -> list[str]:
        """List model ids; also the cheapest way to check a key (401 → ApiKeyRejected, naming
        ``source``, where the key came from, when given)."""
        data = self._request("GET", "/v1/opencode/models", bearer=api_key, source=source)
        items = data.get("data", []) if isinstance(data, dict) else []
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]

    # -------------------------------------------------------------------------------- account

    def login(self, email: str, password: str) -> Login:
        email = email.strip()  # the backend strips it too
        not_email = BackendError(
            f"“{email[:80]}” is not an e-mail address: SmartSpecPro signs in with e-mail only.",
            "Enter your account's e-mail address (and its password).",
            status=422,
        )
        if not looks_like_email(email):
            raise not_email
        try:
            data = self._request(
                "POST",
                "/api/auth/login",
                json_body={"email": email, "password": password},
                credential="jwt",
            )
        except AuthRequired:
            raise AuthRequired(
                "Incorrect email or password.",
                "Check both and sign in again; the e-mail is case-sensitive, so type it exactly "
                "as you registered it.",
                status=401,
            ) from None
        except BackendError as e:
            if e.status == 422 and "email" in e.problem.lower():
                raise not_email from None
            raise
        return Login(data["access_token"], int(data.get("expires_in", 1800)), data.get("user", {}))

    def me(self, token: str) -> dict[str, Any]:
        data = self._request("GET", "/api/auth/me", bearer=token, credential="jwt")
        return data if isinstance(data, dict) else {}

    def balance(self, token: str) -> dict[str, Any]:
        data = self._request("GET", "/api/credits/balance", bearer=token, credential="jwt")
        return data if isinstance(data, dict) else {}

    def transactions(self, token: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        data = self._request(
            "GET",
            "/api/credits/transactions",
            bearer=token,
            credential="jwt",
            params={"limit": limit, "offset": offset},
        )
        return data if isinstance(data, dict) else {}

    # --------------------------------------------------------------------------------- keys

    def create_key(self, token: str, name: str, expires_in_days: int = 90) -> CreatedKey:
        data = self._request(
            "POST",
            "/v1/opencode/api-keys",
            bearer=token,
            credential="jwt",
            json_body={"name": name, "expires_in_days": expires_in_days, "description": None},
        )
        return CreatedKey(
            data["id"], data["name"], data["key"], data["key_prefix"], data.get("expires_at")
        )

    def list_keys(self, token: str, include_inactive: bool = False) -> list[dict[str, Any]]:
        params = {"include_inactive": "true"} if include_inactive else None
        data = self._request(
            "GET", "/v1/opencode/api-keys", bearer=token, credential="jwt", params=params
        )
        return data if isinstance(data, list) else []

    def revoke_key(self, token: str, key_id: str) -> None:
        self._request("DELETE", f"/v1/opencode/api-keys/{key_id}", bearer=token, credential="jwt")

    def rotate_key(self, token: str, key_id: str) -> CreatedKey:
        data = self._request(
            "POST", f"/v1/opencode/api-keys/{key_id}/rotate", bearer=token, credential="jwt"
        )
        return CreatedKey(
            data["id"], data["name"], data["key"], data["key_prefix"], data.get("expires_at")
        )

    def check_new_key(self, created: CreatedKey, action: str = "created") -> None:
        """Check a created or rotated key with ``/v1/opencode/models`` before anyone relies on
        it: the real service answers 200 with a dead key when a revoked key is rotated.
        Raises :class:`ApiKeyInvalid` (not a rejection of the key in use) for a dead key."""
        try:
            self.models(created.key)
        except ApiKeyRejected:
            raise ApiKeyInvalid(
                f"The backend {action} key {created.key_prefix}, but that key does not work (the "
                "gateway rejects it; rotating a revoked key gives such a dead key).",
                "Your current key was kept. Create a new key instead (Create a key for this "
                "computer), or rotate an active one.",
            ) from None
