"""The Python ceiling for one request: a bare FastAPI route that parses a TF Serving predict
body as modelserve does (orjson, the instances as a float32 array) and answers zeros shaped like
the model's output, with no middleware, validation, batching or model. Served by
`benchmarks/hot_path.py` as `uvicorn bare_fastapi:app --app-dir benchmarks`."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

OUTPUT_WIDTH = 2  # votes: two class probabilities

app = FastAPI()


@app.post("/v1/models/{model_method}")
async def predict(model_method: str, request: Request) -> Response:
    body = orjson.loads(await request.body())
    instances = np.asarray(body["instances"], dtype=np.float32)
    outputs = np.zeros((instances.shape[0], OUTPUT_WIDTH), np.float32)
    answer = orjson.dumps({"predictions": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(answer, media_type="application/json")
