"""The transport floor: a hello-world on the server's own HTTP stack.

The same stack as ``python -m serving`` (uvicorn with httptools and uvloop when installed,
a Starlette app with the API mounted at ``/``), answering every ``POST`` with a fixed
``sum_two`` response after reading the body, and ``GET`` with ``{}`` (readiness). No
model, no JSON parsing: what any request costs before our code runs.

    .venv/bin/python bench/hello_server.py --port PORT
"""

from __future__ import annotations

import argparse
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

ANSWER = b'{"predictions": [[3.0, 4.0, 5.0]]}'


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the request body and answers a fixed JSON document."""
    request = Request(scope, receive)
    await request.body()
    body = ANSWER if request.method == "POST" else b"{}"
    await Response(body, media_type="application/json")(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    """Runs the hello-world app on 127.0.0.1 until interrupted."""
    import uvicorn

    from serving.main import _uvicorn_loop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = Starlette(routes=[Mount("/", app=hello)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False, loop=_uvicorn_loop(),
                http="httptools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
