"""Per-workspace OpenCode servers: their records (registry), how one is configured
(launch_config), checked (preflight), reconciled with the process table (reconcile), and the
manager that starts, reuses and stops them."""
