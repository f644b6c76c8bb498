"""Which OpenCode sessions belong to a workspace, and the empty-prompt check."""

from __future__ import annotations

import pytest

from smartspec_desktop.core.errors import EmptyPrompt
from smartspec_desktop.core.opencode.client import SessionInfo, in_workspace
from smartspec_desktop.core.opencode.tasks import check_prompt


def test_a_session_belongs_to_its_folder_and_the_folders_inside_it() -> None:
    assert in_workspace("/home/u/ws", "/home/u/ws")
    assert in_workspace("/home/u/ws/sub/deeper", "/home/u/ws")
    assert in_workspace("/home/u/ws/", "/home/u/ws")
    assert not in_workspace("/home/u/ws2", "/home/u/ws"), "a name prefix is another folder"
    assert not in_workspace("/home/u", "/home/u/ws")
    assert not in_workspace("", "/home/u/ws")


def test_session_info_keeps_the_directory() -> None:
    info = SessionInfo.from_api({"id": "ses_1", "directory": "/w", "time": {"created": 1000}})
    assert info.directory == "/w" and info.public()["directory"] == "/w"


@pytest.mark.parametrize("prompt", ["", " ", "\n\t  \n"])
def test_empty_prompts_are_refused(prompt: str) -> None:
    with pytest.raises(EmptyPrompt, match="The prompt is empty"):
        check_prompt(prompt)
    assert check_prompt(" do it ") == " do it "
