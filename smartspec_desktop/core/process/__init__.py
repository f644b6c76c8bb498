"""Where a process is started, watched and killed: the supervisor (child side), the supervised
handle (parent side), process identities and tree kills, and the environment children get."""
