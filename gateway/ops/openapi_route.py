"""`GET /openapi.json`: the gateway's OpenAPI document (built once, by `gateway.ops.openapi`)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway.ops.openapi import openapi_document


def openapi_route() -> Route:
    body = json.dumps(openapi_document(__version__)).encode()

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"])
