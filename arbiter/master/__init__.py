"""The master process: its one-threaded loop, the web worker pool it keeps, and its dealings with
the host (signals, systemd, daemonizing, pidfile, rlimits, in-place upgrade, the file reloader)."""
