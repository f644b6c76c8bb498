"""Unit tests of core.backend.BackendClient against the backend stand-in (and a mock transport)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smartspec_desktop.core.backend import BackendClient, key_matches_prefix, retry_after_seconds
from smartspec_desktop.core.errors import (
    ApiKeyInvalid,
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
    assert client.models(key) == standin.models and len(standin.models) == 19
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


def test_rate_limit_with_a_long_retry_after_stops_at_once_and_says_so(
    standin: BackendStandIn,
) -> None:
    key = standin.issue_api_key(EMAIL)
    standin.force_429(1, retry_after=70)
    slept: list[float] = []
    with BackendClient(standin.url, sleep=slept.append) as c, pytest.raises(RateLimited) as ei:
        c.models(key)
    assert slept == [] and ei.value.retry_after == 70.0 and ei.value.status == 429
    assert "asks to wait 70 s" in ei.value.problem and "stopped" in ei.value.problem
    assert "retrying" not in str(ei.value)  # never promise a retry that does not happen
    assert "60 requests a minute" in ei.value.fix
    assert_secret_free(ei.value, key)
    with BackendClient(standin.url) as c:
        assert c.models(key)  # the next request goes through


def test_429_without_retry_after_is_retried_with_a_bounded_backoff(
    standin: BackendStandIn,
) -> None:
    # backend-contract.md: "429 carries no Retry-After ... Never promise "retrying in N s"
    # unless the app really waits and retries."
    key = standin.issue_api_key(EMAIL)
    standin.force_429(3)
    slept: list[float] = []
    said: list[str] = []
    with BackendClient(standin.url, sleep=slept.append, on_wait=said.append) as c:
        assert c.models(key) == standin.models
    assert slept == [1.0, 2.0, 4.0]
    assert [r.status for r in standin.requests] == [429, 429, 429, 200]  # really retried
    assert said[0].startswith("Rate limited by the SmartSpecPro backend; waiting 1 s")


def test_429_that_does_not_end_stops_plainly_within_the_budget(standin: BackendStandIn) -> None:
    key = standin.issue_api_key(EMAIL)
    standin.force_429(50)
    slept: list[float] = []
    with (
        BackendClient(standin.url, sleep=slept.append, rate_limit_wait=10) as c,
        pytest.raises(RateLimited) as ei,
    ):
        c.models(key)
    assert sum(slept) <= 10 and slept == [1.0, 2.0, 4.0]
    assert "stopped trying" in ei.value.problem and "4 times over 7 s" in ei.value.problem
    assert "retrying in" not in str(ei.value)
    assert ei.value.retry_after == 60.0  # so callers that honour it do not retry at once
    assert len(standin.requests) == 4


def test_retry_after_header_within_the_budget_is_waited_out(standin: BackendStandIn) -> None:
    key = standin.issue_api_key(EMAIL)
    standin.force_429(1, retry_after=3)
    slept: list[float] = []
    with BackendClient(standin.url, sleep=slept.append) as c:
        assert c.models(key)
    assert slept == [3.0]


def test_no_text_promises_a_retry_it_does_not_make() -> None:
    import smartspec_desktop.core.backend as backend_module
    import smartspec_desktop.core.errors as errors_module

    for module in (backend_module, errors_module):
        text = Path(str(module.__file__)).read_text(encoding="utf-8").lower()
        assert "retrying in" not in text, module.__name__


# --------------------------------------------------------------------------- F9: deadline, size


def test_a_slow_drip_answer_fails_clearly_within_the_deadline(standin: BackendStandIn) -> None:
    # security-review.md F9: "one byte every 5 s hangs start indefinitely".
    key = standin.issue_api_key(EMAIL)
    standin.drip_answers(5.0, path="/v1/opencode/models")
    started = time.monotonic()
    with BackendClient(standin.url, deadline=2.0) as c, pytest.raises(BackendUnreachable) as ei:
        c.models(key)
    assert time.monotonic() - started < 10.0  # seconds, not forever (generous bound)
    assert "did not answer in time" in ei.value.problem and "2 s" in ei.value.problem
    assert "backend is running" in ei.value.fix
    assert_secret_free(ei.value, key)


def test_a_fast_drip_is_cut_by_the_total_deadline_not_the_read_timeout(
    standin: BackendStandIn,
) -> None:
    key = standin.issue_api_key(EMAIL)
    standin.drip_answers(0.05, path="/v1/opencode/models")  # each read is quick; the whole is not
    started = time.monotonic()
    with (
        BackendClient(standin.url, timeout=10.0, deadline=1.0) as c,
        pytest.raises(BackendUnreachable) as ei,
    ):
        c.models(key)
    assert time.monotonic() - started < 8.0
    assert "within 1 s" in ei.value.problem


def test_a_huge_answer_is_refused_without_reading_it_all(standin: BackendStandIn) -> None:
    # security-review.md F9: "a 600 MiB models answer took the CLI to 8.6 GB of memory".
    key = standin.issue_api_key(EMAIL)
    standin.pad_answers(600 * 1024 * 1024, path="/v1/opencode/models")
    with BackendClient(standin.url) as c, pytest.raises(BackendError) as ei:
        c.models(key)
    assert "more than 8 MiB" in ei.value.problem and "/v1/opencode/models" in ei.value.problem
    assert "points at SmartSpecPro" in ei.value.fix


def test_a_huge_chunked_answer_is_cut_at_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            while True:
                yield b" " * 65536

        return httpx.Response(200, content=body())

    c = mock_client(httpx.MockTransport(handler))
    c.max_bytes = 1024 * 1024
    with c, pytest.raises(BackendError) as ei:
        c.gateway_health()
    assert "more than 1 MiB" in ei.value.problem


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


def test_a_failed_login_says_the_email_is_case_sensitive(client: BackendClient) -> None:
    # backend-contract.md "Login e-mail: ... lookup case-sensitive".
    with pytest.raises(AuthRequired) as ei:
        client.login(EMAIL.upper(), PASSWORD)
    assert "case-sensitive" in ei.value.fix


@pytest.mark.parametrize("login", ["admin", "dev", "dev@", "@example.com", "dev@localhost"])
def test_a_login_that_is_not_an_email_asks_for_the_email(
    client: BackendClient, standin: BackendStandIn, login: str
) -> None:
    # backend-contract.md "Login e-mail: validated as an e-mail ("admin" → 422 ...)".
    standin.clear_requests()
    with pytest.raises(BackendError) as ei:
        client.login(login, PASSWORD)
    assert "enter your account's e-mail address" in ei.value.fix.lower()
    assert "backend URL" not in str(ei.value) and "app version" not in str(ei.value)
    assert_secret_free(ei.value, PASSWORD)
    assert standin.requests == []  # refused before asking the backend


def test_a_422_for_the_email_from_the_backend_asks_for_the_email() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        detail = [{"loc": ["body", "email"], "msg": "value is not a valid email address: x"}]
        return httpx.Response(422, json={"detail": detail})

    with mock_client(httpx.MockTransport(handler)) as c, pytest.raises(BackendError) as ei:
        c.login("odd@example.com", "pw")
    assert "enter your account's e-mail address" in ei.value.fix.lower()


def test_login_strips_spaces_around_the_email(client: BackendClient) -> None:
    assert client.login(f"  {EMAIL} ", PASSWORD).user["email"] == EMAIL


def test_inactive_user_login_is_refused_as_403(
    client: BackendClient, standin: BackendStandIn
) -> None:
    standin.set_active(EMAIL, False)
    with pytest.raises(BackendError) as ei:
        client.login(EMAIL, PASSWORD)
    assert ei.value.status == 403
    assert "User account is inactive" in ei.value.problem


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


def test_a_rotated_revoked_key_is_found_dead_by_check_new_key(
    client: BackendClient, standin: BackendStandIn
) -> None:
    # backend-contract.md "Rotating a revoked key answers 200 with a fresh raw key that stays
    # inactive ... Check a rotated or created key with /v1/opencode/models".
    token = standin.issue_token(EMAIL)
    created = client.create_key(token, "k")
    client.check_new_key(created)  # a live key passes
    client.revoke_key(token, created.id)
    dead = client.rotate_key(token, created.id)
    with pytest.raises(ApiKeyInvalid) as ei:
        client.check_new_key(dead, "rotated")
    assert "does not work" in ei.value.problem and dead.key_prefix in ei.value.problem
    assert "current key was kept" in ei.value.fix
    assert_secret_free(ei.value, dead.key, token)


def test_a_rejected_key_names_its_source(client: BackendClient) -> None:
    bad = "sk-smartspec-" + "z" * 43
    with pytest.raises(ApiKeyRejected) as ei:
        client.models(bad, source="SMARTSPEC_API_KEY")
    assert "from the SMARTSPEC_API_KEY environment variable" in ei.value.problem
    assert "Set SMARTSPEC_API_KEY to a valid key" in ei.value.fix
    with pytest.raises(ApiKeyRejected) as ei:
        client.models(bad, source="keyring")
    assert "from the OS keyring" in ei.value.problem


def test_key_prefix_matching() -> None:
    key = "sk-smartspec-" + "A" * 39 + "DpQ8"
    assert key_matches_prefix(key, f"{key[:16]}...{key[-4:]}")
    assert not key_matches_prefix(key, "sk-smartspec-zDA...DpQ8")
    assert not key_matches_prefix(key, "")


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


def test_a_compressed_answer_is_read_once_and_limited_after_decoding() -> None:
    import gzip
    import json

    payload = json.dumps({"status": "ok", "service": "opencode-gateway"}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=gzip.compress(payload), headers={"Content-Encoding": "gzip"}
        )

    with mock_client(httpx.MockTransport(handler)) as c:
        assert c.gateway_health()["service"] == "opencode-gateway"

    bomb = gzip.compress(b" " * (4 * 1024 * 1024))  # small on the wire, 4 MiB decoded

    def bomb_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})

    c = mock_client(httpx.MockTransport(bomb_handler))
    c.max_bytes = 1024 * 1024
    with c, pytest.raises(BackendError) as ei:
        c.gateway_health()
    assert "more than 1 MiB" in ei.value.problem
