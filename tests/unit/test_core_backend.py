"""Unit tests of core.backend.BackendClient against the backend stand-in (and a mock transport)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from smartspec_desktop.core.backend import BackendClient, retry_after_seconds
from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    AuthRequired,
    BackendError,
    BackendUnreachable,
    GatewayError,
    InsufficientCredits,
    RateLimited,
    SmartSpecError,
)
from tests.backend_standin import BackendStandIn

EMAIL = "dev@example.com"
PASSWORD = "correct horse battery"


@pytest.fixture
def standin() -> Iterator[BackendStandIn]:
    backend = BackendStandIn().start()
    try:
        backend.add_user(EMAIL, PASSWORD, credits=5000.0)
        yield backend
    finally:
        backend.stop()
    assert backend.errors == []


@pytest.fixture
def client(standin: BackendStandIn) -> Iterator[BackendClient]:
    with BackendClient(standin.url + "/", timeout=5.0) as c:
        yield c


def assert_secret_free(err: SmartSpecError, *secrets: str) -> None:
    text = " ".join([str(err), err.problem, err.fix, err.details, repr(err.to_dict())])
    for s in secrets:
        assert s not in text


def mock_client(handler: httpx.MockTransport) -> BackendClient:
    c = BackendClient("http://backend.test")
    c._http.close()
    c._http = httpx.Client(base_url="http://backend.test", transport=handler)
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- gateway


def test_base_url_trailing_slash_is_dropped_and_gateway_url_derived(
    client: BackendClient, standin: BackendStandIn
) -> None:
    assert client.base_url == standin.url
    assert client.gateway_url == standin.url + "/v1/opencode"


def test_gateway_health_ok(client: BackendClient) -> None:
    data = client.gateway_health()
    assert data["status"] == "ok"


def test_unhealthy_gateway_is_an_error_with_its_status(
    client: BackendClient, standin: BackendStandIn
) -> None:
    standin.set_health_ok(False)
    with pytest.raises(BackendError) as ei:
        client.gateway_health()
    assert ei.value.status == 503
    assert isinstance(ei.value, GatewayError)  # a /v1/opencode route failed
    assert "degraded" in ei.value.problem


def test_models_lists_the_gateway_model_ids(client: BackendClient, standin: BackendStandIn) -> None:
    key = standin.issue_api_key(EMAIL)
    assert client.models(key) == ["anthropic/claude-3.5-sonnet", "openai/gpt-4o-mini"]
    req = standin.requests[-1]
    assert req.path == "/v1/opencode/models" and req.bearer_token == key


def test_bad_key_is_rejected_and_never_echoed(
    client: BackendClient, standin: BackendStandIn
) -> None:
    bad = "sk-smartspec-" + "x" * 43
    with pytest.raises(ApiKeyRejected) as ei:
        client.models(bad)
    assert "rejected the API key" in ei.value.problem
    assert "Invalid API key" in ei.value.problem
    assert "key set" in ei.value.fix
    assert_secret_free(ei.value, bad)


def test_revoked_key_is_rejected(client: BackendClient, standin: BackendStandIn) -> None:
    token = standin.issue_token(EMAIL)
    created = client.create_key(token, "laptop")
    client.revoke_key(token, created.id)
    with pytest.raises(ApiKeyRejected) as ei:
        client.models(created.key)
    assert_secret_free(ei.value, created.key, token)


def test_rate_limit_reports_retry_after_from_the_header(
    client: BackendClient, standin: BackendStandIn
) -> None:
    key = standin.issue_api_key(EMAIL)
    standin.force_429(1, retry_after=7)
    with pytest.raises(RateLimited) as ei:
        client.models(key)
    assert ei.value.retry_after == 7.0
    assert ei.value.status == 429
    assert "retrying in 7 s" in str(ei.value)
    assert "60 requests a minute" in ei.value.fix
    assert_secret_free(ei.value, key)
    assert client.models(key)  # the next request goes through


def test_unreachable_backend_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with BackendClient(url, timeout=2.0) as c, pytest.raises(BackendUnreachable) as ei:
        c.gateway_health()
    assert url in ei.value.problem
    assert "Cannot reach" in ei.value.problem
    assert "--backend-url" in ei.value.fix


def test_slow_backend_times_out_as_unreachable(standin: BackendStandIn) -> None:
    standin.delay_all(60.0)
    key = standin.issue_api_key(EMAIL)
    started = time.monotonic()
    with BackendClient(standin.url, timeout=0.3) as c, pytest.raises(BackendUnreachable) as ei:
        c.models(key)
    assert time.monotonic() - started < 30, "the client waited for the 60 s answer"
    assert "did not answer in time" in ei.value.problem
    assert standin.url in ei.value.problem
    assert_secret_free(ei.value, key)


# ------------------------------------------------------------------------------------- account


def test_login_returns_token_and_user(client: BackendClient) -> None:
    login = client.login(EMAIL, PASSWORD)
    assert login.access_token
    assert login.expires_in == 1800
    assert login.user["email"] == EMAIL
    assert client.me(login.access_token)["email"] == EMAIL


def test_wrong_password_says_so_without_echoing_it(client: BackendClient) -> None:
    with pytest.raises(AuthRequired) as ei:
        client.login(EMAIL, "wrong password!")
    assert ei.value.problem == "Incorrect email or password."
    assert ei.value.status == 401
    assert_secret_free(ei.value, "wrong password!")


def test_inactive_user_login_is_refused_as_403(
    client: BackendClient, standin: BackendStandIn
) -> None:
    standin.set_active(EMAIL, False)
    with pytest.raises(BackendError) as ei:
        client.login(EMAIL, PASSWORD)
    assert ei.value.status == 403
    assert "Inactive user" in ei.value.problem


def test_balance_and_transactions_with_a_jwt(
    client: BackendClient, standin: BackendStandIn
) -> None:
    token = client.login(EMAIL, PASSWORD).access_token
    assert client.balance(token)["balance_credits"] == 5000
    tx = client.transactions(token, limit=5, offset=0)
    assert tx["transactions"] == []
    req = standin.requests[-1]
    assert req.query == {"limit": "5", "offset": "0"}


def test_expired_jwt_asks_to_sign_in_again(client: BackendClient, standin: BackendStandIn) -> None:
    token = standin.issue_token(EMAIL)
    standin.expire_tokens()
    with pytest.raises(AuthRequired) as ei:
        client.balance(token)
    assert "sign-in is not valid" in ei.value.problem
    assert "Sign in again" in ei.value.fix
    assert_secret_free(ei.value, token)


# ----------------------------------------------------------------------------------------- keys


def test_create_list_rotate_and_revoke_keys(client: BackendClient, standin: BackendStandIn) -> None:
    token = client.login(EMAIL, PASSWORD).access_token
    created = client.create_key(token, "desktop", expires_in_days=30)
    assert created.key.startswith("sk-smartspec-") and created.name == "desktop"
    assert created.key_prefix == f"{created.key[:16]}...{created.key[-4:]}"
    assert created.expires_at is not None
    assert client.models(created.key)

    listed = client.list_keys(token)
    assert [k["id"] for k in listed] == [created.id]
    assert all("key" not in k for k in listed)  # only the prefix is ever listed again

    rotated = client.rotate_key(token, created.id)
    assert rotated.id == created.id and rotated.key != created.key
    with pytest.raises(ApiKeyRejected):
        client.models(created.key)  # the old key stops working at once
    assert client.models(rotated.key)

    client.revoke_key(token, created.id)
    assert client.list_keys(token) == []
    inactive = client.list_keys(token, include_inactive=True)
    assert [(k["id"], k["is_active"]) for k in inactive] == [(created.id, False)]
    assert standin.requests[-1].query == {"include_inactive": "true"}


def test_posts_carry_content_type_and_json_even_without_a_body(
    client: BackendClient, standin: BackendStandIn
) -> None:
    token = standin.issue_token(EMAIL)
    created = client.create_key(token, "k")
    standin.clear_requests()
    client.rotate_key(token, created.id)  # a POST with no body of its own
    (req,) = standin.requests
    assert req.method == "POST" and req.path.endswith("/rotate")
    assert req.headers["content-type"] == "application/json"
    assert req.body == {}
    assert req.status == 200


def test_create_key_sends_the_contract_body(client: BackendClient, standin: BackendStandIn) -> None:
    token = standin.issue_token(EMAIL)
    client.create_key(token, "named", expires_in_days=7)
    req = standin.requests[-1]
    assert req.body == {"name": "named", "expires_in_days": 7, "description": None}
    assert req.headers["accept"] == "application/json"


def test_rotating_an_unknown_key_is_a_404_backend_error(
    client: BackendClient, standin: BackendStandIn
) -> None:
    token = standin.issue_token(EMAIL)
    with pytest.raises(BackendError) as ei:
        client.rotate_key(token, "no-such-id")
    assert ei.value.status == 404
    assert "API key not found" in ei.value.problem
    assert_secret_free(ei.value, token)


# ------------------------------------------------------------------------- mapped status codes


def test_402_maps_to_insufficient_credits() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"detail": "Insufficient credits. Please add credits."})

    with mock_client(httpx.MockTransport(handler)) as c, pytest.raises(InsufficientCredits) as ei:
        c.models("sk-smartspec-" + "k" * 43)
    assert ei.value.status == 402
    assert "Insufficient credits. Please add credits." in ei.value.problem
    assert "Add credits" in ei.value.fix


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/v1/opencode/models", GatewayError), ("/api/credits/balance", BackendError)],
)
def test_5xx_is_a_gateway_error_only_on_gateway_routes(
    path: str, expected: type[BackendError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway")

    with mock_client(httpx.MockTransport(handler)) as c, pytest.raises(BackendError) as ei:
        if path.startswith("/v1"):
            c.models("sk-smartspec-" + "k" * 43)
        else:
            c.balance("tok")
    assert type(ei.value) is expected
    assert ei.value.status == 502
    assert "502: Bad Gateway" in ei.value.problem


def test_validation_error_details_are_joined() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422, json={"detail": [{"msg": "Field required"}, {"msg": "Input should be int"}]}
        )

    with mock_client(httpx.MockTransport(handler)) as c, pytest.raises(BackendError) as ei:
        c.create_key("tok", "x")
    assert ei.value.status == 422
    assert "Field required; Input should be int" in ei.value.problem


def test_non_json_success_is_reported_as_a_wrong_service() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>hello</html>")

    with mock_client(httpx.MockTransport(handler)) as c, pytest.raises(BackendError) as ei:
        c.gateway_health()
    assert "not JSON" in ei.value.problem
    assert ei.value.status == 200


def test_empty_success_is_none_and_delete_works() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(204)

    with mock_client(httpx.MockTransport(handler)) as c:
        c.revoke_key("tok", "abc")
    assert seen == ["DELETE /v1/opencode/api-keys/abc"]


@pytest.mark.parametrize(
    ("header", "expected"), [("12", 12.0), ("0.5", 0.5), ("-3", 0.0), ("soon", 60.0), (None, 60.0)]
)
def test_retry_after_seconds(header: str | None, expected: float) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    assert retry_after_seconds(httpx.Response(429, headers=headers)) == expected
