"""A WSGI app the proxy tests serve through `serving.launcher`: it reports what a worker saw.

GET /whoami answers the worker's REMOTE_ADDR, X-Forwarded-For and Forwarded as JSON; GET
/slow?marker=PATH writes the worker's pid to PATH, then answers after a second.
"""

import json
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        marker = parse_qs(environ["QUERY_STRING"])["marker"][0]
        with open(marker, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(1)
    body = json.dumps({
        "remote_addr": environ.get("REMOTE_ADDR"),
        "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
        "forwarded": environ.get("HTTP_FORWARDED"),
        "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
