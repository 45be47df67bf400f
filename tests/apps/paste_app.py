"""A PasteDeploy app factory: `use = call:paste_app:make_app` in a paste .ini file."""


def make_app(global_conf, greeting="hi", **local_conf):
    region = global_conf.get("region", "-")

    def app(environ, start_response):
        body = f"{greeting} from {region} at {environ.get('SCRIPT_NAME', '')}|{environ['PATH_INFO']}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app
