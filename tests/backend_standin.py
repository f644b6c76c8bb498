"""The tests' SmartSpecPro backend stand-in: it lives in :mod:`smartspec_desktop.demo.backend`
(the app's demo gateway shares it); this module re-exports it for the tests."""

from __future__ import annotations

from smartspec_desktop.demo.backend import (
    API_KEY_PREFIX,
    CHAT_PATH,
    DEFAULT_KEY_DESCRIPTION,
    DEFAULT_REPLY,
    GATEWAY_MODES,
    RATE_LIMIT_BODY,
    REAL_CHAT_ERROR,
    REAL_MODELS,
    REAL_STREAM_ERROR,
    UNSUPPORTED_MEDIA_BODY,
    BackendStandIn,
    Delay,
    DemoScript,
    ErrorChunk,
    Hang,
    HttpError,
    RecordedRequest,
    Step,
    Text,
    ToolCall,
)

__all__ = [
    "API_KEY_PREFIX",
    "CHAT_PATH",
    "DEFAULT_KEY_DESCRIPTION",
    "DEFAULT_REPLY",
    "GATEWAY_MODES",
    "RATE_LIMIT_BODY",
    "REAL_CHAT_ERROR",
    "REAL_MODELS",
    "REAL_STREAM_ERROR",
    "UNSUPPORTED_MEDIA_BODY",
    "BackendStandIn",
    "Delay",
    "DemoScript",
    "ErrorChunk",
    "Hang",
    "HttpError",
    "RecordedRequest",
    "Step",
    "Text",
    "ToolCall",
]
