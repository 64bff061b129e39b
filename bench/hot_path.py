"""The verify endpoint in process, without sockets: what the HTTP layers cost on top of the check.

Builds a Sparekey deployment on SQLite in a temporary directory, enrolls users with an HOTP factor,
and calls the ASGI application directly with ``POST /v1/users/{id}/verify`` requests (fresh valid
codes, then wrong codes), counting this process's CPU time per request. It compares two ways in:

* **hot**: as shipped; :class:`sparekey.api.app.SparekeyAPI` answers the request before
  FastAPI's middleware stack;
* **stack**: the same route placed first in FastAPI's router instead, behind the whole middleware
  stack, as before the hot path existed;

and, as the floor, **service**: ``VerificationService.verify`` called directly (no HTTP at all).
Rounds alternate between the ways so that drift on the machine falls on all of them alike.

    .venv/bin/python bench/hot_path.py [--users 512] [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from sparekey.api import create_app
from sparekey.api.app import SparekeyAPI
from sparekey.api.routers import verify, webauthn
from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings

WAYS = ("service", "hot", "stack")
WORKLOADS = ("valid", "wrong")
LOOK_AHEAD = 50  # more counters than the server's HOTP window: a wrong code matches none
FREE_FAILURES = 20  # the throttle's setting here; a valid code resets the count


@dataclass
class User:
    user_id: str
    secret: bytes
    counter: int  # the next counter whose code has not been sent


def enroll(app: Sparekey, count: int) -> list[User]:
    users = []
    for n in range(count):
        user_id = f"u{n:05d}"
        app.users.create(user_id=user_id, display_name=None, email=None)
        enrollment = app.factors.enroll(user_id, type=FactorType.HOTP)
        code = hotp(key=enrollment.secret, counter=0)
        app.factors.confirm(user_id, enrollment.factor.id, code=code)
        users.append(User(user_id, enrollment.secret, 1))
    return users


def through_the_stack(api: FastAPI) -> FastAPI:
    """The application as it was before the hot path: the fast routes first in the router."""
    assert isinstance(api, SparekeyAPI)
    api.hot_routes = ()
    for route in (verify.fast_route, webauthn.fast_route):
        api.router.routes.insert(0, route)
    return api


def code_for(user: User, workload: str) -> str:
    if workload == "valid":
        return hotp(key=user.secret, counter=user.counter)
    near = {hotp(key=user.secret, counter=user.counter + n) for n in range(LOOK_AHEAD)}
    return next(c for c in (f"{n:06d}" for n in range(LOOK_AHEAD + 1)) if c not in near)


async def call(api: FastAPI, token: str, user: User, code: str) -> tuple[int, bytes]:
    body = json.dumps({"code": code}).encode()
    path = f"/v1/users/{user.user_id}/verify"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    messages: list[MutableMapping[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await api(scope, receive, send)
    return int(messages[0]["status"]), b"".join(m.get("body", b"") for m in messages[1:])


def checked(workload: str, status: int, body: bytes) -> None:
    verified = status == 200 and json.loads(body).get("verified") is True
    if status != 200 or verified != (workload == "valid"):
        raise SystemExit(f"wrong answer to a {workload} code: {status} {body[:200]!r}")


async def measure(
    way: str,
    one: Callable[[User, str], Awaitable[tuple[int, bytes]]],
    users: Sequence[User],
    workload: str,
    requests: int,
    start: int,
) -> float:
    """CPU seconds of this process per request, over ``requests`` requests."""
    began = time.process_time()
    for n in range(start, start + requests):
        user = users[n % len(users)]
        status, body = await one(user, code_for(user, workload))
        checked(workload, status, body)
        if workload == "valid":
            user.counter += 1
    return (time.process_time() - began) / requests


async def run(users_count: int, requests: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    os.environ["SPAREKEY_THROTTLE_FREE_FAILURES"] = str(FREE_FAILURES)
    with tempfile.TemporaryDirectory(prefix="sparekey-hot-path-") as folder:
        settings = load_settings(Path(folder))
        token = initialize(settings).admin_token
        assert token is not None
        app = Sparekey.open(settings)
        try:
            users = enroll(app, users_count)
            apis = {"hot": create_app(app), "stack": through_the_stack(create_app(app))}

            async def direct(user: User, code: str) -> tuple[int, bytes]:
                result = app.verification.verify(user.user_id, code)
                return 200, json.dumps({"verified": result.verified}).encode()

            def via(api: FastAPI) -> Callable[[User, str], Awaitable[tuple[int, bytes]]]:
                return lambda user, code: call(api, token, user, code)

            ways = {"service": direct, "hot": via(apis["hot"]), "stack": via(apis["stack"])}
            for way, one in ways.items():  # warm every path once
                await measure(way, one, users, "valid", 200, 0)
            figures: dict[str, dict[str, list[float]]] = {
                w: {k: [] for k in WORKLOADS} for w in WAYS
            }
            offset = 0
            for round_ in range(rounds):
                for workload in WORKLOADS:
                    for way in WAYS:
                        seconds = await measure(way, ways[way], users, workload, requests, offset)
                        offset += requests  # wrong codes spread over the users, as valid ones
                        figures[way][workload].append(seconds)
                print(f"  round {round_ + 1} of {rounds} done", file=sys.stderr, flush=True)
            return figures
        finally:
            app.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=512)
    parser.add_argument("--requests", type=int, default=2000, help="per way, workload and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if (
        len(WAYS) * args.requests >= FREE_FAILURES * args.users
    ):  # wrong codes between two valid runs
        parser.error("too few users: wrong codes would reach the throttle (raise --users)")
    figures = asyncio.run(run(args.users, args.requests, args.rounds))
    print(
        f"\nCPU per request in process (median of {args.rounds} rounds of {args.requests}), "
        f"{args.users} users, SQLite:"
    )
    print(
        f"{'workload':<10}{'service µs':>12}{'hot µs':>10}{'stack µs':>11}{'hot/stack':>11}"
        f"{'HTTP share, hot':>17}"
    )
    for workload in WORKLOADS:
        med = {way: statistics.median(figures[way][workload]) * 1e6 for way in WAYS}
        print(
            f"{workload:<10}{med['service']:>12.0f}{med['hot']:>10.0f}{med['stack']:>11.0f}"
            f"{med['hot'] / med['stack']:>11.2f}{1 - med['service'] / med['hot']:>17.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
