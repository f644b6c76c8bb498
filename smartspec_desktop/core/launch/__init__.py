"""The rich UIs of a workspace: OpenCode's TUI in a terminal, OpenWork in the browser."""
