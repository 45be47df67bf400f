"""A Flask app: `arbiter examples.flask_app:app -w 4` (WSGI, so the sync worker)."""

import os
import time

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(hello="world", pid=os.getpid())


@app.get("/slow")
def slow():
    seconds = float(request.args.get("seconds", "1"))
    time.sleep(seconds)
    return jsonify(slept=seconds, pid=os.getpid())


@app.post("/echo")
def echo():
    return request.get_data()
