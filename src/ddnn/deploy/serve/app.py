"""The HTTP app: POST /predict, GET /health, GET /metrics (FastAPI on uvicorn; docs/deploy.md says why).

Every refused request gets a 4xx and {"error": "<one line>"}, is counted by reason in /metrics, and
touches nothing else: the queue, the model and the other requests go on.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ddnn.deploy.serve.batching import Batcher
from ddnn.deploy.serve.inputs import BadRequest, decode
from ddnn.deploy.serve.metrics import Metrics
from ddnn.runtime import Depth, SwitchableError, SwitchableModel


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_images: int = 32  # per request


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def parse_depth(model: SwitchableModel, text: str | None) -> Depth | None:
    """?depth= as an index or a name (None: the policy's)."""
    if text is None:
        return None
    try:
        return model.depth(int(text) if text.lstrip("-").isdigit() else text)
    except SwitchableError as err:
        raise BadRequest(400, str(err), "unknown_depth") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (Content-Length, else while read)."""
    too_large = BadRequest(413, f"the body is larger than this server's limit of {limit} bytes", "too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(model: SwitchableModel, policy, max_batch: int = 8, limits: Limits = Limits(),
               name: str = "model") -> FastAPI:
    """The app serving `model` under `policy`; its batch worker starts and stops with the app."""
    metrics = Metrics(max_batch)
    state: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = Batcher(model, policy, max_batch, on_batch=metrics.batch)
        state["batcher"].start()
        yield
        await state["batcher"].stop()  # after uvicorn has answered every request in flight

    app = FastAPI(title="ddnn serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def refuse(err: BadRequest) -> JSONResponse:
        metrics.rejected.labels(err.label).inc()
        metrics.requests.labels(str(err.status)).inc()
        return JSONResponse({"error": err.reason}, status_code=err.status)

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            depth = parse_depth(model, request.query_params.get("depth"))
            body = await read_body(request, limits.max_body_bytes)
            images = decode(body, request.headers.get("content-type", ""), model.input_shape, limits.max_images)
        except BadRequest as err:
            return refuse(err)
        try:
            served = await state["batcher"].submit(images, depth, arrived=start)
        except Exception as err:  # the model failed on this batch: this request's problem only
            metrics.requests.labels("500").inc()
            return JSONResponse({"error": f"the model failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"},
                                status_code=500)
        probs = softmax(served.logits)
        state["batcher"].answered(served)
        total = (time.perf_counter() - start) * 1e3
        metrics.latency.observe(total / 1e3)
        metrics.requests.labels("200").inc()
        return JSONResponse({
            "predictions": [{"class": int(p.argmax()), "probabilities": [round(float(v), 6) for v in p]} for p in probs],
            "depth": {"index": served.depth.index, "name": served.depth.name},
            "ms": {"total": round(total, 3), "queue": round(served.queue_ms, 3), "inference": round(served.inference_ms, 3)},
            "batch": served.batch,
        })

    @app.get("/health")
    async def health():
        batcher = state.get("batcher")
        return {"status": "ok", "model": name, "policy": policy.describe(), "max_batch": max_batch,
                "queued_images": batcher.queued_images if batcher else 0,
                "input": {"shape": list(model.input_shape), "dtype": "float32 in [0, 1], or PNG/JPEG 8-bit"},
                "depths": [{"index": d.index, "name": d.name, "blocks": list(d.blocks), "macs": d.macs, "top1": d.top1,
                            "val_top1": d.val_top1,
                            "expected_ms": {str(n): round(model.expected_ms(d.index, n), 4) for n in (1, max_batch)}}
                           for d in model.depths]}

    @app.get("/metrics")
    async def prometheus():
        batcher = state.get("batcher")
        metrics.queued.set(batcher.queued_images if batcher else 0)
        return Response(metrics.text(), media_type=metrics.content_type)

    return app
