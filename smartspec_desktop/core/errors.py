"""Typed, user-facing errors.

Every expected failure is a :class:`SmartSpecError` whose text names the problem *and* the fix, in
one line, so the CLI can print it as is and the window can put it in a banner. Secrets never go into
these messages: callers pass only redacted text.
"""

from __future__ import annotations


class SmartSpecError(Exception):
    """An expected failure: ``problem`` says what went wrong, ``fix`` what the user can do."""

    #: Stable machine-readable kind, used by ``--json`` output and by the UI to pick an action.
    code = "error"

    def __init__(self, problem: str, fix: str = "", *, details: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        #: Longer context (e.g. the last log lines of a server); shown on demand, not in one-liners.
        self.details = details

    def __str__(self) -> str:
        return f"{self.problem} {self.fix}".strip()

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "problem": self.problem,
            "fix": self.fix,
            "details": self.details,
        }


class WorkspaceError(SmartSpecError):
    code = "workspace"


class ConfigError(SmartSpecError):
    code = "config"


class StateError(SmartSpecError):
    code = "state"


class KeyringUnavailable(SmartSpecError):
    code = "keyring_unavailable"


class ApiKeyMissing(SmartSpecError):
    code = "api_key_missing"


class ApiKeyInvalid(SmartSpecError):
    """The key is malformed (checked locally, before any request)."""

    code = "api_key_invalid"


class BackendError(SmartSpecError):
    code = "backend"

    def __init__(
        self, problem: str, fix: str = "", *, details: str = "", status: int | None = None
    ) -> None:
        super().__init__(problem, fix, details=details)
        self.status = status


class ApiKeyRejected(BackendError):
    """The backend answered 401 for the key."""

    code = "api_key_rejected"


class BackendUnreachable(BackendError):
    code = "backend_unreachable"


class AuthRequired(BackendError):
    """A JWT is needed (sign in) or has expired."""

    code = "auth_required"


class RateLimited(BackendError):
    code = "rate_limited"

    def __init__(
        self, problem: str, fix: str = "", *, retry_after: float, details: str = ""
    ) -> None:
        super().__init__(problem, fix, details=details, status=429)
        self.retry_after = retry_after


class InsufficientCredits(BackendError):
    code = "insufficient_credits"


class GatewayError(BackendError):
    """The LLM gateway failed a chat call (5xx, an error chunk, a stream without ``[DONE]``)."""

    code = "gateway"


class OpenCodeNotFound(SmartSpecError):
    code = "opencode_missing"


class OpenCodeVersionError(SmartSpecError):
    code = "opencode_version"


class OpenCodeInstallError(SmartSpecError):
    code = "opencode_install"


class ServerStartError(SmartSpecError):
    code = "server_start"


class PortInUse(ServerStartError):
    """The port was taken between our pick and the program's bind: another port may work."""


class StartBusy(ServerStartError):
    """A passing condition (OpenCode's database busy during a parallel start): retry shortly."""


class ServerNotRunning(SmartSpecError):
    code = "server_not_running"


class TaskError(SmartSpecError):
    """A prompt run through OpenCode failed (the assistant message carries an error)."""

    code = "task"


class NotFound(TaskError):
    """OpenCode answered 404 (e.g. a session id it does not know)."""

    code = "not_found"


class EmptyPrompt(TaskError):
    """The prompt is empty or only whitespace: refused before anything is sent (or billed)."""

    code = "empty_prompt"


class TaskAborted(TaskError):
    """The task was stopped on purpose (Abort); not a failure of the gateway or OpenCode."""

    code = "task_aborted"


class LaunchError(SmartSpecError):
    """A terminal or browser could not be opened."""

    code = "launch"


class LaunchCancelled(LaunchError):
    """The user cancelled Open OpenWork UI while it waited (e.g. for the browser)."""

    code = "launch_cancelled"


class NoTerminalError(LaunchError):
    code = "no_terminal"


class BudgetReached(TaskError):
    """The gateway broker refused a call: a task or daily token budget is used up (issue 9).

    ``task`` is the broker's task id when a task budget stopped it (None: the day's budget);
    ``cap`` the budget in tokens (0 when the message did not say).
    """

    code = "budget_reached"

    def __init__(
        self, problem: str, fix: str = "", *, task: str | None = None, cap: int = 0
    ) -> None:
        super().__init__(problem, fix)
        self.task = task
        self.cap = cap


class BrokerUnavailable(SmartSpecError):
    """A server's gateway broker (its control API) could not be reached or refused us."""

    code = "broker_unavailable"
