"""WSGI app with lazy state: its first request builds a 40 MB table of bytes objects (what a real
app builds on first use: caches, lookup tables); every answer is read from it.

/sleep?s=N sleeps first (slow clients in load tests); /threads starts a thread that never ends
(an app reforking cannot stop); the answer says which pid served and one byte of the table.
"""
import os
import threading
import time
from urllib.parse import parse_qs

TABLE_MB = int(os.environ.get("LAZY_TABLE_MB", "40"))
CHUNK = 64 * 1024
_table = None
_refork_calls = 0


def _build():
    global _table
    if _table is None:
        _table = [os.urandom(CHUNK) for _ in range(TABLE_MB * 1024 * 1024 // CHUNK)]
    return _table


def app(environ, start_response):
    table = _build()
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/threads":
        threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="app-sleeper").start()
    entry = table[len(path) % len(table)]
    body = f"pid={os.getpid()} byte={entry[0]} entries={len(table)} reforks={_refork_calls}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def on_refork_called():
    global _refork_calls
    _refork_calls += 1


application = app
