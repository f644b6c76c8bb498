"""The remote engine's pure parts (issue 15): ssh command lines, ssh's errors in plain words,
the remote identity line, the supervisor's hand-over to the remote side, the reap queue."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from smartspec_desktop.core.errors import PortInUse, ServerStartError, SmartSpecError
from smartspec_desktop.core.process.supervised import EarlyExit, ExitRecord
from smartspec_desktop.core.process.supervisor import _remote_handover
from smartspec_desktop.core.remote import engine, reap, scripts
from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.server import _wait_ready
from smartspec_desktop.core.remote.ssh import (
    RemoteAuthError,
    RemoteError,
    RemoteHostKeyError,
    RemoteUnreachable,
    sh_command,
    ssh_argv,
    ssh_env,
    ssh_error,
)
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus, record_from_json

ADDR = parse_remote("ssh://me@devbox:2222/home/me/my project")


def test_every_ssh_runs_in_batch_mode_with_the_config_file_and_no_agent_forwarding() -> None:
    argv = ssh_argv(ADDR, "true", environ={"SMARTSPEC_SSH_CONFIG": "/tmp/cfg"})
    assert argv[:3] == ["ssh", "-F", "/tmp/cfg"]
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "BatchMode=yes" in opts and "ForwardAgent=no" in opts
    assert any(o.startswith("ConnectTimeout=") for o in opts)
    assert argv[-3:] == ["--", "me@devbox", "true"] and argv[argv.index("-p") + 1] == "2222"
    assert "-F" not in ssh_argv(ADDR, "true", environ={})


def test_the_serve_command_forwards_loopback_only_and_carries_no_secret() -> None:
    argv = engine.serve_argv(
        ADDR,
        opencode="/opt/oc",
        local_port=3795,
        remote_port=31000,
        broker_forward_port=31001,
        server_id="srv_0123456789abcdef",
        environ={},
    )
    assert argv[argv.index("-L") + 1] == "127.0.0.1:3795:127.0.0.1:31000"
    assert argv[argv.index("-R") + 1] == "127.0.0.1:31001:127.0.0.1:@BROKER_PORT@"
    assert "ExitOnForwardFailure=yes" in argv
    # The remote command runs the wrapper under sh, with the folder (spaces and all) as $1.
    words = shlex.split(argv[-1])
    assert words[:3] == ["exec", "sh", "-c"] and words[3] == scripts.SERVE
    assert words[4:] == [
        "smartspec",
        ADDR.path,
        "31000",
        "31001",
        "/opt/oc",
        "srv_0123456789abcdef",
        "5",  # the host samples the server's tree every 5 s (SMARTSPEC_REMOTE_USAGE_SECONDS)
    ]


def test_remote_scripts_are_valid_sh_without_single_quotes(tmp_path: Path) -> None:
    for name in ("PROBE", "SERVE", "KILL", "INSTALL"):
        script = getattr(scripts, name)
        sh_command(script)  # refuses a single quote
        f = tmp_path / f"{name}.sh"
        f.write_text(script)
        r = subprocess.run(["sh", "-n", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)
    with pytest.raises(ValueError):
        sh_command("echo 'x'")


@pytest.mark.parametrize(
    ("stderr", "kind", "words"),
    [
        ("Host key verification failed.\r\n", RemoteHostKeyError, "ssh me@devbox:2222"),
        (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification "
            "failed.",
            RemoteHostKeyError,
            "ssh-keygen -R devbox",
        ),
        ("me@devbox: Permission denied (publickey).", RemoteAuthError, "ssh-copy-id"),
        (
            "ssh: Could not resolve hostname devbox: Name or service not known",
            RemoteUnreachable,
            "Host entry",
        ),
        ("ssh: connect to host devbox port 2222: Connection refused", RemoteUnreachable, "is up"),
        ("kex_exchange_identification: read: Connection reset by peer", RemoteError, "ssh me@"),
    ],
)
def test_ssh_failures_name_the_host_and_the_fix(
    stderr: str, kind: type[RemoteError], words: str
) -> None:
    err = ssh_error(ADDR, stderr)
    assert type(err) is kind
    assert "devbox" in err.problem and words in str(err)


def test_ssh_gets_none_of_our_settings_in_its_environment() -> None:
    env = ssh_env(
        {
            "PATH": "/bin",
            "SSH_AUTH_SOCK": "/run/agent",
            "SMARTSPEC_API_KEY": "sk-smartspec-x",
            "OPENCODE_SERVER_PASSWORD": "pw",
            "SMARTSPEC_SSH_CONFIG": "/tmp/cfg",
        }
    )
    assert env == {
        "PATH": "/bin",
        "SSH_AUTH_SOCK": "/run/agent",
        "SMARTSPEC_SSH_CONFIG": "/tmp/cfg",
    }


def test_the_supervisor_hands_settings_over_stdin_and_strips_them_from_ssh(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"provider": {"smartspec": {"models": {"m": {"name": "m"}}}}}))

    class FakeBroker:
        port = 41234

    env = {
        "PATH": "/bin",
        "OPENCODE_SERVER_PASSWORD": "pw-1",
        "OPENCODE_CONFIG": str(models),
        "OPENCODE_CONFIG_CONTENT": '{"model":"smartspec/m"}',
        "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
        "SMARTSPEC_BROKER_TOKEN": "tok-1",
        "SMARTSPEC_BROKER_URL": "http://127.0.0.1:41234/v1/opencode",
        "SMARTSPEC_SERVER_ID": "srv_0123456789abcdef",
        "OPENCODE_OTHER": "x\ny",
    }
    command, settings = _remote_handover(
        ["ssh", "-R", "1:127.0.0.1:@BROKER_PORT@"], env, FakeBroker()
    )
    assert command == ["ssh", "-R", "1:127.0.0.1:41234"]
    lines = settings.decode().split("\n")
    assert lines[-2:] == ["", ""]  # the empty line ends the settings
    assert "OPENCODE_SERVER_PASSWORD=pw-1" in lines and "SMARTSPEC_BROKER_TOKEN=tok-1" in lines
    assert "OPENCODE_DISABLE_PROJECT_CONFIG=1" in lines
    assert not any(ln.startswith(("SMARTSPEC_BROKER_URL", "OPENCODE_CONFIG=")) for ln in lines)
    (model_line,) = [ln for ln in lines if ln.startswith("@models=")]
    assert json.loads(model_line[len("@models=") :])["provider"]["smartspec"]["models"] == {
        "m": {"name": "m"}
    }
    assert env == {"PATH": "/bin"}


def test_the_remote_identity_is_read_from_the_wrappers_line(tmp_path: Path) -> None:
    log = tmp_path / "srv.log"
    assert engine.read_identity(log) is None
    log.write_text(f"x\n{scripts.MARK} pid=4242 start=987654\nopencode server listening\n")
    assert engine.read_identity(log) == (4242, 987654)


def test_remote_fields_are_additive_and_status_json_carries_the_host() -> None:
    old = {"server_id": "srv_1", "workspace_path": "/w", "status": "running", "created_at": "x"}
    rec = record_from_json(old)
    assert rec is not None and rec.host == "" and rec.remote_pid == 0
    assert rec.public()["host"] is None
    remote = ServerRecord("srv_2", str(ADDR), ServerStatus.RUNNING, "x", host="me@devbox:2222")
    assert remote.public()["host"] == "me@devbox:2222"


def test_parse_host_accepts_a_host_or_an_address() -> None:
    assert engine.parse_host("me@devbox:2222").display_host == "me@devbox:2222"
    assert engine.parse_host("ssh://devbox/x").host == "devbox"
    with pytest.raises(SmartSpecError):
        engine.parse_host("-oProxyCommand=evil")


@pytest.mark.allow_log(
    r"smartspec_desktop\.core\.remote\.reap: stopped the remote server srv_a",
    reason="the queued server is found running and stopped: said as a warning",
)
def test_the_reap_queue_retries_an_unreachable_host_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int, str]] = []
    reachable = [False]

    def fake_kill(addr: object, pid: int, start: int, sid: str, **kw: object) -> str:
        calls.append((str(addr), pid, start, sid))
        if not reachable[0]:
            raise RemoteUnreachable("devbox cannot be reached", "check it")
        return "stopped"

    monkeypatch.setattr(reap, "kill_remote", fake_kill)
    q = reap.ReapQueue(tmp_path / "remote-reap.json")
    assert q.run() == []
    q.add("srv_a", str(ADDR), 10, 20)
    q.add("srv_b", str(ADDR), 0, 0)  # nothing recorded: nothing to kill
    assert q.run() == [] and len(calls) == 1
    (pending,) = q.pending()
    assert pending.tries == 1 and pending.next_try > 0
    assert q.run() == [] and len(calls) == 1  # not due yet: no new attempt
    reachable[0] = True
    with q.lock:
        data = json.loads(q.path.read_text())
        data["pending"][0]["next_try"] = 0
        q.path.write_text(json.dumps(data))
    assert q.run() == ["srv_a: stopped"] and q.pending() == []
    assert calls[-1] == (str(ADDR), 10, 20, "srv_a")


def test_a_reconnecting_server_says_so_and_takes_the_new_remote_identity(tmp_path: Path) -> None:
    exit_file = tmp_path / "srv_1.json"
    rec = ServerRecord(
        "srv_1", str(ADDR), ServerStatus.RUNNING, "x", host="me@devbox:2222",
        exit_file=str(exit_file), remote_pid=10, remote_start=20,
    )  # fmt: skip
    engine.apply_link(rec)  # no link file: nothing changes
    assert rec.error == "" and not rec.disconnected
    link = engine.link_file(exit_file)
    link.write_text(json.dumps({"state": "reconnecting", "attempt": 2, "of": 8}))
    engine.apply_link(rec)
    assert rec.disconnected and "connecting again (attempt 2 of 8)" in rec.error
    assert rec.public()["disconnected"] is True
    link.write_text(json.dumps({"state": "connected", "pid": 11, "start": 21}))
    engine.apply_link(rec)
    assert not rec.disconnected and (rec.remote_pid, rec.remote_start) == (11, 21)


def test_a_hosts_opencode_version_is_remembered_per_binary(tmp_path: Path) -> None:
    versions = engine.RemoteVersions(tmp_path / "remote-opencode.json")
    assert versions.get("devbox") == ("", "")
    versions.put("devbox", "/oc:1:2:3", "1.18.33")
    assert versions.get("devbox") == ("/oc:1:2:3", "1.18.33")
    assert versions.get("other") == ("", "")


def test_a_remote_servers_sub_agents_are_looked_up_through_the_local_forward() -> None:
    """The broker asks the server for a session's parent on the forward's local end, never on
    the remote port (which is not this machine's: another program may listen there)."""
    from smartspec_desktop.core.process.idle import port_of
    from smartspec_desktop.core.process.supervisor import _forwarded_port

    argv = engine.serve_argv(
        ADDR,
        opencode="/opt/oc",
        local_port=3795,
        remote_port=31000,
        broker_forward_port=31001,
        server_id="srv_0123456789abcdef",
        environ={},
    )
    assert port_of(argv) == 0
    assert _forwarded_port(argv) == 3795
    assert _forwarded_port(["opencode", "serve", "--port", "4000"]) == 0


class _ExitsAtOnce:
    """A started server (as :func:`_wait_ready` sees it) that ended before it was ready."""

    def __init__(self, tail: str) -> None:
        self.tail = tail

    def wait_ready(self, healthy: object, deadline: float) -> None:
        raise EarlyExit("ssh", ExitRecord(exit_code=1), self.tail)


@pytest.mark.parametrize(
    ("tail", "kind"),
    [
        # OpenCode 1.18 on a busy --port says only this (anomalyco/opencode#46263).
        ("Error: Unexpected error\nServeError\n[smartspec] ssh exited with code 1", PortInUse),
        ("Warning: remote port forwarding failed for listen port 31000", PortInUse),
        ("Error: Unexpected error\nConfigInvalidError", ServerStartError),
    ],
)
def test_a_remote_start_that_meets_a_busy_port_is_a_port_conflict(
    tmp_path: Path, tail: str, kind: type[ServerStartError]
) -> None:
    """Only a port conflict is a :class:`PortInUse` (the manager retries it on new ports);
    any other early exit is a plain start error naming the host and the log."""
    manager = SimpleNamespace(settings=SimpleNamespace(start_timeout=5.0))
    record = SimpleNamespace(url="http://127.0.0.1:9", log_path=tmp_path / "srv.log")
    with pytest.raises(ServerStartError) as e:
        _wait_ready(manager, _ExitsAtOnce(tail), record, "pw", ADDR)  # type: ignore[arg-type]
    assert type(e.value) is kind
    assert "devbox" in e.value.problem
