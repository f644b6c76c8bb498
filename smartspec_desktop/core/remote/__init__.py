"""Workspaces on another machine, reached with the system's OpenSSH client (issue 15)."""
