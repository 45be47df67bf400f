"""The smallest WSGI app: `arbiter examples.wsgi_hello:app -k sync -w 2`."""


def app(environ, start_response):
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
