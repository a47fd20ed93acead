"""The transport floors: a hello-world on the server's own HTTP and gRPC stacks.

The same stacks as ``python -m serving``: uvicorn with httptools and uvloop when installed,
a Starlette app with the API mounted at ``/``, answering every ``POST`` with a fixed
``sum_two`` response after reading the body, and ``GET`` with ``{}`` (readiness); with
``--grpc-port``, ``grpc.aio`` on the same event loop (started from the app's lifespan, as
:func:`serving.main.add_grpc` does) answering ``PredictionService/Predict`` with a fixed
serialized ``PredictResponse``, the request bytes not parsed. No model, no JSON or
protobuf parsing: what any request costs before our code runs.

    .venv/bin/python bench/hello_server.py --port PORT [--grpc-port PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

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


def grpc_answer() -> bytes:
    """The ``PredictResponse`` our server gives ``sum_two``'s bench request, serialized."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from tfserving import tensor_proto

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "sum_two"
    response.model_spec.signature_name = "serving_default"
    response.model_spec.version.value = 1
    tensor_proto.to_proto(np.array([[3.0, 4.0, 5.0]], np.float32),
                          proto=response.outputs["output_0"])
    return response.SerializeToString()


def add_grpc_hello(app: Starlette, port: int) -> None:
    """Serves the fixed Predict answer over ``grpc.aio`` on the app's event loop."""
    import grpc

    from serving.grpc_api import SERVER_OPTIONS

    answer = grpc_answer()

    async def predict(request: bytes, context: Any) -> bytes:
        return answer

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[None]:
        async with inner(app_):
            server = grpc.aio.server(options=list(SERVER_OPTIONS))
            # No (de)serializers: the handler gets and returns bytes.
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService",
                {"Predict": grpc.unary_unary_rpc_method_handler(predict)}),))
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            try:
                yield
            finally:
                await server.stop(1)

    app.router.lifespan_context = lifespan


def main(argv: list[str] | None = None) -> int:
    """Runs the hello-world app on 127.0.0.1 until interrupted."""
    import uvicorn

    from serving.main import _uvicorn_loop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: no gRPC")
    args = parser.parse_args(argv)
    app = Starlette(routes=[Mount("/", app=hello)])
    if args.grpc_port:
        add_grpc_hello(app, args.grpc_port)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False, loop=_uvicorn_loop(),
                http="httptools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
