"""Client for the SmartSpecPro backend (see shared/notes/backend-contract.md).

Blocking httpx calls with timeouts; the window runs them on worker threads. Every failure becomes a
typed error with a message naming the problem and the fix. Keys and tokens are never put into
error text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    AuthRequired,
    BackendError,
    BackendUnreachable,
    GatewayError,
    InsufficientCredits,
    RateLimited,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


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
    def __init__(self, base_url: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: a system proxy must not see loopback traffic or our credentials
        # unless the backend is remote; for remote backends proxies are honoured.
        remote = not any(h in self.base_url for h in ("://localhost", "://127.", "://[::1]"))
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=remote)

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
        try:
            r = self._http.request(method, path, headers=headers, content=content, params=params)
        except httpx.TimeoutException:
            raise BackendUnreachable(
                f"The SmartSpecPro backend at {self.base_url} did not answer in time.",
                "Check your connection and that the backend is running, then try again.",
            ) from None
        except httpx.HTTPError as e:
            raise BackendUnreachable(
                f"Cannot reach the SmartSpecPro backend at {self.base_url} ({type(e).__name__}).",
                "Check the backend URL (Settings or --backend-url) and that the service is "
                "running.",
            ) from None
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
        raise self._error(r, path, credential)

    def _error(self, r: httpx.Response, path: str, credential: str) -> BackendError:
        detail = _detail(r)
        status = r.status_code
        if status == 429:
            wait = retry_after_seconds(r)
            return RateLimited(
                f"Rate limited by the SmartSpecPro backend, retrying in {wait:.0f} s.",
                "The backend allows 60 requests a minute from this computer, shared with OpenCode.",
                retry_after=wait,
            )
        if status == 401:
            if credential == "api_key":
                return ApiKeyRejected(
                    f"The SmartSpecPro backend rejected the API key ({detail}).",
                    "Paste a valid key under Account (or `smartspec-desktop key set`); revoked or "
                    "rotated keys stop working at once.",
                )
            return AuthRequired(
                f"Your SmartSpecPro sign-in is not valid any more ({detail}).",
                "Sign in again under Account (sessions last 30 minutes).",
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

    def models(self, api_key: str) -> list[str]:
        """List model ids; also the cheapest way to check a key (401 → ApiKeyRejected)."""
        data = self._request("GET", "/v1/opencode/models", bearer=api_key)
        items = data.get("data", []) if isinstance(data, dict) else []
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]

    # -------------------------------------------------------------------------------- account

    def login(self, email: str, password: str) -> Login:
        try:
            data = self._request(
                "POST",
                "/api/auth/login",
                json_body={"email": email, "password": password},
                credential="jwt",
            )
        except AuthRequired:
            raise AuthRequired(
                "Incorrect email or password.", "Check both and sign in again.", status=401
            ) from None
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
