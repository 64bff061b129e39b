"""The ceiling for ``verify_load.py``: a bare Starlette endpoint shaped like Sparekey's verify.

It reads the JSON body and answers ``{"verified": false}``: no authentication, no database, no
cryptography. Served the way ``sparekey serve`` serves Sparekey (one uvicorn process, uvicorn's
default HTTP and event-loop implementations, access log off), so the difference between the two is
what Sparekey itself costs per request.

Run it alone with ``python bench/bare_app.py --port 8001`` or ``uvicorn bench.bare_app:app``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def verify(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"verified": False})


app = Starlette(routes=[Route("/v1/users/{user_id}/verify", verify, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the bare verify-shaped endpoint.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on [8001]")
    args = parser.parse_args()
    # The same arguments as `sparekey serve` passes (sparekey.cli.main.serve) with its defaults.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
