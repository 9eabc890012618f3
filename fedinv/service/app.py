"""The HTTP layer of a decision service (FastAPI + uvicorn): routes, the bearer token,
errors as status codes. Everything else is :class:`fedinv.service.core.DecisionService`.

  * ``POST /v1/decide`` -- :class:`~fedinv.service.codec.DecisionRequest` -> the reply
    (422 naming each bad field; 409 a day out of sequence; 500 solver trouble);
  * ``GET /v1/health``, ``GET /v1/policy``; OpenAPI at ``/docs`` and ``/openapi.json``.

With a token every route but ``/docs`` and ``/openapi.json`` needs ``Authorization:
Bearer TOKEN`` (compared in constant time, :func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedinv.service.codec import DecisionRequest, RequestError
from fedinv.service.core import ConflictError, DecisionService


class CheckpointSwap(BaseModel):
    """``POST /v1/checkpoint``: the checkpoint file to decide with from now on."""

    model_config = ConfigDict(extra="forbid")
    path: str


class Retrain(BaseModel):
    """``POST /v1/retrain`` (all optional): training replications, days per replication
    (default: the days recorded; classical only), coordinate sweeps, the fewest recorded
    days accepted, the last days trained on (default: all recorded); for an HDPO
    checkpoint the gradient batches, held-out replications and step size."""

    model_config = ConfigDict(extra="forbid")
    replications: int = Field(8, ge=1)
    days: int | None = Field(None, ge=1)
    sweeps: int = Field(1, ge=1)
    min_days: int = Field(14, ge=1)
    window: int | None = Field(None, ge=1)
    iterations: int = Field(4, ge=1, description="HDPO: gradient batches")
    eval_replications: int = Field(8, ge=1, description="HDPO: held-out replications")
    learning_rate: float = Field(1e-3, gt=0, description="HDPO: Adam's first step size")


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped; ValueError if empty)."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"--token-file {path} is empty")
    return token


def make_app(service: DecisionService, token: str | None = None) -> FastAPI:
    """The FastAPI application of ``service``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()  # at shutdown (SIGTERM, SIGINT): the --data files written

    app = FastAPI(
        lifespan=lifespan,
        title=f"fedinv decision service ({service.config.org})",
        description="Releases one organization's orders through its policy and safety layer; "
        "every decision is appended to a hash-chained log (docs/service.md).",
        version="1",
    )
    expected = None if token is None else token.encode()

    def token_ok(header: str) -> bool:
        if expected is None:
            return True
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    async def auth(request: Request) -> None:  # async: no worker-thread hop per request
        if not token_ok(request.headers.get("authorization", "")):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def handle(raw: bytes, authorization: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """A decision request's ``(status, JSON body, extra headers)``: the body is parsed
        and validated here, once (json.loads, then the pydantic model), not through
        FastAPI's body parameter (its dependency solving and second validation pass cost
        ~1 ms a request); the reply is the logged entry's JSON text (no second dump)."""

        def detail(status: int, what: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
            return status, json.dumps({"detail": what}).encode(), []

        if not token_ok(authorization):
            status, text, _ = detail(401, "missing or wrong bearer token")
            return status, text, [(b"www-authenticate", b"Bearer")]
        try:
            body = json.loads(raw)
            req = DecisionRequest.model_validate(body)
        except ValueError as exc:  # JSONDecodeError, pydantic's ValidationError
            return detail(422, body_errors(exc))
        try:
            return 200, service.decide_json(req, body).encode(), []
        except RequestError as exc:
            return detail(422, exc.errors)
        except ConflictError as exc:
            return detail(409, str(exc))
        except RuntimeError as exc:  # SolverError: the layer could not answer
            return detail(500, f"solver: {exc}")

    app.state.decide = handle  # serve() answers POST /v1/decide with it before routing

    @app.post(
        "/v1/decide",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/DecisionRequest"}}
                },
            }
        },
    )
    async def decide(request: Request) -> Response:
        """Release today's orders for the organization's state (the body: a
        ``DecisionRequest``); the reply is the logged entry's JSON. One decision at a
        time on the event loop's thread (one worker; the service serializes anyway)."""
        status, text, headers = handle(
            await request.body(), request.headers.get("authorization", "")
        )
        extra = {k.decode(): v.decode() for k, v in headers}
        return Response(text, status_code=status, headers=extra, media_type="application/json")

    @app.post("/v1/checkpoint", dependencies=[Depends(auth)])
    def swap(body: CheckpointSwap) -> dict[str, Any]:
        """Hot swap to another checkpoint (a file on the service's machine); logged in
        the chain. Decisions go on while the new policy is built."""
        try:
            return service.swap(Path(body.path))
        except (ValueError, OSError) as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/v1/retrain", dependencies=[Depends(auth)])
    def retrain(body: Retrain | None = None) -> dict[str, Any]:
        """Start re-tuning the policy (or fine-tuning an HDPO checkpoint) on the recorded
        data (``--data``) in a background process; the result is swapped in (logged)
        when it ends. 409 when one is running, too few days are recorded, or a DQN."""
        from fedinv.service.retrain import RetrainOptions

        try:
            opts = RetrainOptions(**(body or Retrain()).model_dump())
            return service.retrain(opts)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/v1/retrain", dependencies=[Depends(auth)])
    def retrain_status() -> dict[str, Any]:
        """The last retrain job: running, swapped (with its swap entry) or failed."""
        job = service.retrain_job
        return {"job": None} if job is None else job.as_dict()

    @app.get("/v1/health", dependencies=[Depends(auth)])
    def health() -> dict[str, Any]:
        return service.health()

    @app.get("/v1/policy", dependencies=[Depends(auth)])
    def policy() -> dict[str, Any]:
        return {
            **service.policy_info,
            "policy_digest": service.policy_digest,
            "nodes": service.codec.node_ids,
            "lanes": service.codec.own_lane_ids,
            "supplied_lanes": service.codec.outbound_lane_ids,
        }

    def openapi() -> dict[str, Any]:  # the request schema the decide route reads by hand
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            defs = DecisionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["DecisionRequest"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def body_errors(exc: ValueError) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` for a body that is not JSON or not a ``DecisionRequest``:
    one entry per bad field, its ``loc`` starting with ``"body"``."""
    if isinstance(exc, ValidationError):
        errors = json.loads(exc.json(include_url=False))
        return [{**e, "loc": ["body", *e["loc"]]} for e in errors]
    return [  # as FastAPI words it
        {
            "type": "json_invalid",
            "loc": ["body", getattr(exc, "pos", 0)],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": getattr(exc, "msg", str(exc))},
        }
    ]


class DecideFirst:
    """ASGI: ``POST /v1/decide`` answered by the app's decision handler
    (``app.state.decide``) straight from uvicorn, everything else by the FastAPI app.
    The same handler the FastAPI route calls (one copy of the logic); skipping the
    middleware stack, routing and ``Request`` objects saves ~0.5 ms a decision."""

    def __init__(self, app: FastAPI):
        self.app, self.handle = app, app.state.decide

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/decide" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        authorization = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
        status, text, headers = self.handle(b"".join(chunks), authorization.decode("latin-1"))
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(text))]
        await send({"type": "http.response.start", "status": status, "headers": head + headers})
        await send({"type": "http.response.body", "body": text})


def serve(
    service: DecisionService,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> None:
    """Run the app with uvicorn (one worker; TLS with ``certfile`` and ``keyfile``)."""
    import uvicorn

    uvicorn.run(
        DecideFirst(make_app(service, token)),
        host=host,
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        ssl_certfile=None if certfile is None else str(certfile),
        ssl_keyfile=None if keyfile is None else str(keyfile),
    )
