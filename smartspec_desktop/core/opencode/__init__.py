"""OpenCode itself: the binary (find, pin, install) and its HTTP + SSE API (client, tasks)."""
