"""Health, metrics, and the descriptions behind each problem ``type``."""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import text

from sparekey.api.deps import App, AppMetrics
from sparekey.api.problems import PROBLEMS, problem_response
from sparekey.api.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health)
def healthz(app: App) -> Health:
    with app.db.read() as conn:
        conn.execute(text("SELECT 1"))
    return Health(status="ok", database="ok")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(metrics: AppMetrics) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/problems/{slug}", response_class=PlainTextResponse)
def describe_problem(slug: str = Path(max_length=64)) -> Response:
    kind = PROBLEMS.get(slug)
    if kind is None:
        return problem_response("not-found", f"no problem type {slug!r}")
    return PlainTextResponse(f"{kind.title} ({kind.status})\n\n{kind.description}\n")
