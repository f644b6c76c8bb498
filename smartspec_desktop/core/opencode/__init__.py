"""OpenCode itself: the binary (find, pin, install), its HTTP + SSE API (client), its event
stream folded into state (events), and a prompt run to the end (tasks)."""
