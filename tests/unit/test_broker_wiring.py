"""The app's side of the gateway broker (issue 9): config and env of a server, broker errors
as OpenCode reports them, usage summaries, the ledger window, settings' day caps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartspec_desktop.core.broker import errors
from smartspec_desktop.core.errors import ApiKeyMissing, BudgetReached, GatewayError
from smartspec_desktop.core.opencode.events import error_from_opencode
from smartspec_desktop.core.servers.brokerlink import (
    Usage,
    broker_files,
    charged_in_window,
    summarize,
    usage_report,
)
from smartspec_desktop.core.servers.launch_config import opencode_config, server_env
from smartspec_desktop.core.storage.config import load_settings, save_settings
from smartspec_desktop.core.storage.paths import Paths

KEY = "sk-smartspec-" + "k" * 43


def test_the_server_env_never_holds_the_key_and_points_at_the_models_file(tmp_path: Path) -> None:
    base = {
        "PATH": "/bin",
        "SMARTSPEC_API_KEY": KEY,
        "SMARTSPEC_BROKER_TOKEN": "stale",
        "OPENCODE_CONFIG": "/elsewhere.json",
    }
    env = server_env(base, password="pw", config="{}", models_file=tmp_path / "m.json")
    assert KEY not in json.dumps(env) and "SMARTSPEC_BROKER_TOKEN" not in env
    assert env["OPENCODE_CONFIG"] == str(tmp_path / "m.json")
    config = json.loads(opencode_config("vendor/m-1"))
    options = config["provider"]["smartspec"]["options"]
    assert options == {
        "baseURL": "{env:SMARTSPEC_BROKER_URL}",
        "apiKey": "{env:SMARTSPEC_BROKER_TOKEN}",
    }
    assert config["enabled_providers"] == ["smartspec"] and "models" not in config["provider"]


def _api_error(message: str, status: int, body: bytes | None) -> dict[str, object]:
    data: dict[str, object] = {"message": message, "statusCode": status}
    if body is not None:
        data["responseBody"] = body.decode()
    return {"name": "APIError", "data": data}


def test_broker_errors_become_one_clean_typed_line() -> None:
    url = "http://127.0.0.1:35002"  # "500" in the port: defused with a word joiner
    line = errors.gateway_failure("'LLMGateway' object has no attribute 'x'", url)
    body = errors.error_body(line, errors.GATEWAY_DEFECT)
    e = error_from_opencode(_api_error(line, 400, body))
    assert isinstance(e, GatewayError) and str(e) == line and "\u2060" not in str(e)

    # A stream already under way: OpenCode shows the error object as JSON, no body.
    chunk = json.dumps(errors.error_object(line, errors.GATEWAY_DEFECT))
    assert str(error_from_opencode(_api_error(chunk, 0, None))) == line

    refusal = (
        "Paused: budget of 5,000 tokens reached (task task_ab12: 5,120 used). "
        "Raise the budget (Continue) to go on."
    )
    e = error_from_opencode(
        _api_error(refusal, 400, errors.error_body(refusal, errors.BUDGET_REACHED))
    )
    assert isinstance(e, BudgetReached) and e.cap == 5000 and e.task == "task_ab12"
    assert e.problem == "Paused: budget of 5,000 tokens reached (task task_ab12: 5,120 used)."

    no_key = "The SmartSpec broker has no API key. Sign in again on the Account page."
    e = error_from_opencode(_api_error(no_key, 401, errors.error_body(no_key, errors.NO_KEY)))
    assert isinstance(e, ApiKeyMissing) and str(e) == no_key

    # Anything else keeps today's plain words (a backend 402 is not the broker's).
    e = error_from_opencode(_api_error("Insufficient credits", 402, b'{"detail": "x"}'))
    assert "refused the call" in str(e)


def test_usage_is_summed_per_session_window_and_day() -> None:
    now = 1_800_000_000.0
    recs = [
        {"time": now - 10, "session": "a", "status": 200, "prompt_tokens": 100,
         "completion_tokens": 20},
        {"time": now - 5, "session": "a", "status": 400, "refused": "budget"},
        {"time": now - 3, "session": "b", "status": 200, "prompt_tokens": 7,
         "completion_tokens": 1},
        {"time": now - 90_000, "session": "a", "status": 200, "prompt_tokens": 1_000},
    ]  # fmt: skip
    task = summarize(recs, sessions=["a"], since=now - 60)
    assert (task.calls, task.refused, task.total_tokens) == (2, 1, 120)
    assert task.line() == "2 calls · 120 tokens (100 in / 20 out) · 1 refused"
    report = usage_report(recs, now=now)
    assert report["total"]["total_tokens"] == 1128
    assert report["by_session"]["b"]["calls"] == 1
    assert Usage().line() == "0 calls · 0 tokens (0 in / 0 out)"


def test_the_ledger_window_sums_only_deductions_in_it() -> None:
    listed: list[dict[str, object]] = [
        {"type": "deduction", "amount": 12, "created_at": "2027-01-15T08:00:01"},
        {"type": "deduction", "amount": 5, "created_at": "2027-01-15T08:00:30"},
        {"type": "purchase", "amount": 1000, "created_at": "2027-01-15T08:00:02"},
        {"type": "deduction", "amount": 99, "created_at": "2027-01-15T07:00:00"},
        {"type": "deduction", "amount": "x", "created_at": "nonsense"},
    ]
    start = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert charged_in_window(listed, start, start + 31) == 17
    assert charged_in_window(listed, start, start + 10) == 12


@pytest.mark.allow_log(
    r"smartspec_desktop.core.storage.config: Setting 'workspace_day_caps'",
    reason="the bad value is the point",
)
def test_day_caps_round_trip_in_settings_and_bad_values_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    settings, _ = load_settings(path)
    settings.workspace_day_caps = {"/w": 50_000}
    save_settings(path, settings)
    again, warnings = load_settings(path)
    assert again.workspace_day_caps == {"/w": 50_000} and not warnings
    path.write_text(json.dumps({"workspace_day_caps": {"/w": "lots"}}))
    bad, warnings = load_settings(path)
    assert bad.workspace_day_caps == {} and warnings


def test_broker_files_are_per_workspace_and_models_per_server(tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path)
    a, b = broker_files(paths, "/w", "srv_1"), broker_files(paths, "/w", "srv_2")
    assert a.meter_file == b.meter_file and a.budget_file == b.budget_file
    assert a.models_file != b.models_file and a.meter_file.parent.name == "usage"
    assert broker_files(paths, "/other").meter_file != a.meter_file
