"""A Gunicorn-style config with server hooks; each hook appends a line to $HOOK_LOG."""
import os

workers = 2
worker_class = "uvicorn"
timeout = 20


def _note(line):
    with open(os.environ["HOOK_LOG"], "a") as handle:
        handle.write(line + "\n")


def on_starting(server):
    _note("on_starting")


def when_ready(server):
    _note(f"when_ready workers={server.num_workers}")


def pre_fork(server, worker):
    _note(f"pre_fork age={worker.age}")


def post_fork(server, worker):
    _note(f"post_fork pid={worker.pid}")


def post_worker_init(worker):
    _note(f"post_worker_init pid={worker.pid}")


def child_exit(server, worker):
    _note(f"child_exit pid={worker.pid}")


def worker_exit(server, worker):
    _note(f"worker_exit pid={worker.pid}")


def nworkers_changed(server, new_value, old_value):
    _note(f"nworkers_changed {old_value}->{new_value}")


def on_exit(server):
    _note("on_exit")
