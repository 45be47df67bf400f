"""Python config for reforking tests: on_refork runs in the mold, post_fork in every worker."""
import os

import lazy_table_app


def on_refork(worker):
    lazy_table_app.on_refork_called()
    print(f"on_refork in pid {os.getpid()}", flush=True)


def post_fork(server, worker):
    print(f"post_fork in pid {os.getpid()}", flush=True)
