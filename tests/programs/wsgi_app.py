# A WSGI app for gunicorn, which takes recluster's sockets through its systemd support.
import os


def app(environ, start_response):
    body = f"pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
