"""The transports alone: what one V2 call costs Python's fastest HTTP/1.1 and gRPC stacks
before any serving code runs. benchmarks/v2_wire.py measures it beside modelserve, with the
same bytes and the same load tools, to separate what modelserve adds from what its protocol
libraries cost.

Each of `--processes` processes (SO_REUSEPORT, as modelserve's workers share their ports) runs
one uvloop event loop serving both ports:
- REST: uvicorn (httptools), a bare ASGI app that reads the body and answers the prepared
  answer for its path: no routing, middleware, validation or parsing;
- gRPC: grpc.aio, `inference.GRPCInferenceService/ModelInfer` through a generic handler that
  parses the ModelInferRequest (as any V2 gRPC server must, to know the model) and answers the
  prepared, already serialized ModelInferResponse.
The answers are the model's real answers, prepared by the caller (`--answers`: a JSON file of
{"rest": {path: [header length, body file]}, "grpc": {model: body file}}), so the bytes on the
wire are those of modelserve's answers. `GET /ready` answers 200 once the REST port listens.

    python benchmarks/protocol_floor.py --rest-port P --grpc-port G --answers FILE [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path
from typing import Any

import grpc
import uvicorn
import uvloop
from tritonclient.grpc import service_pb2

from service.processes.worker import listening_socket  # as modelserve's workers share ports

Answers = dict[str, Any]


def rest_app(answers: dict[str, tuple[int, bytes]]) -> Any:
    """The bare ASGI app: each prepared path's answer, with the binary extension's header."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # the whole body, as any server must read it
            message = await receive()
            more = message.get("more_body", False)
        header_length, body = answers.get(scope["path"], (0, b""))
        status = 200 if body or scope["path"] == "/ready" else 404
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(header_length).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def grpc_handler(answers: dict[str, bytes]) -> grpc.GenericRpcHandler:
    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        model = service_pb2.ModelInferRequest.FromString(request).model_name
        if model not in answers:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no answer for {model!r}")
        return answers[model]

    method = grpc.unary_unary_rpc_method_handler(model_infer)  # bytes in, bytes out
    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": method}
    )


def load_answers(path: Path) -> tuple[dict[str, tuple[int, bytes]], dict[str, bytes]]:
    spec: Answers = json.loads(path.read_text())
    rest = {
        route: (length, Path(file).read_bytes()) for route, (length, file) in spec["rest"].items()
    }
    rest["/ready"] = (0, b"")
    return rest, {model: Path(file).read_bytes() for model, file in spec["grpc"].items()}


def serve(rest_port: int, grpc_port: int, answers_file: Path) -> None:
    rest_answers, grpc_answers = load_answers(answers_file)

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers([grpc_handler(grpc_answers)])
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        config = uvicorn.Config(
            rest_app(rest_answers), http="httptools", log_level="warning", access_log=False
        )
        await uvicorn.Server(config).serve(sockets=[listening_socket("127.0.0.1", rest_port)])
        await server.stop(None)

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    processes = [
        multiprocessing.Process(target=serve, args=(args.rest_port, args.grpc_port, args.answers))
        for _ in range(args.processes)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()


if __name__ == "__main__":
    main()
