"""Flask hello world. The body names the serving process (`pid=1234`)."""

import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return f"Hello, World! pid={os.getpid()}\n"
