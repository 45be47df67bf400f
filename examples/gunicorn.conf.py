# A Gunicorn-style config file works as is: `arbiter -c examples/gunicorn.conf.py examples.flask_app:app`
import multiprocessing

bind = ["127.0.0.1:8000"]
workers = min(4, multiprocessing.cpu_count() * 2)
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"


def when_ready(server):
    server.log.info("Ready: %d workers", server.num_workers)


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)
