"""The Qt-free core: sessions, processes, ports, config, secrets and the backend client.

Nothing under this package may import Qt; it is used alike by the CLI, the window and the tests.
"""
