"""The ceiling of the stack: our HTTP server stack answering /updates with a constant.

Same uvicorn (httptools, uvloop), Starlette routing and orjson answer as otameter, reading and
decoding the body like the real handler, but touching no database. Run by bench/run.py:
``uvicorn bench.stack_ceiling:app --workers N``.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = orjson.dumps(
    {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }
)


async def updates(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/updates", updates, methods=["POST"]), Route("/health", health)])
