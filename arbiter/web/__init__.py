"""The web side: listening sockets, the shared-memory scoreboard, loading the app, a worker's boot,
the worker classes (`workers/`) and Arbiter's own HTTP/1.1 layer for WSGI (`http/`)."""
