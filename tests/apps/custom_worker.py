"""A custom worker class on the documented base: `-k custom_worker:TaggingWorker`."""
from arbiter.web.workers.asgi import UvicornWorker


class TaggingWorker(UvicornWorker):
    """Adds a response header to everything it serves."""

    def make_config(self):
        config = super().make_config()
        config.headers = [("x-worker-class", "tagging")]
        return config

    def init_process(self):
        self.log.info("TaggingWorker booting (pid: %s)", self.pid)
        super().init_process()
