"""The operators' routes, open without a key: ``GET /healthz`` (for load balancers),
``GET /metrics`` (Prometheus) and ``GET /`` (a page to try the model from a browser)."""

from importlib.resources import files

from bertprobe.core.extras import needs_extra
from bertprobe.serve.dependencies import Slot
from bertprobe.serve.schemas import Health

with needs_extra("serve"):
    from fastapi import APIRouter, Response
    from fastapi.responses import HTMLResponse
    from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter()
# Read once: the page is part of the package, not something that changes while serving.
_PAGE = (files("bertprobe") / "templates" / "index.html").read_text(encoding="utf-8")


@router.get("/healthz", response_model=Health)
async def health(slot: Slot) -> Health:
    return Health(status="ok", model=slot.served.name)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(slot: Slot) -> Response:
    return Response(slot.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_PAGE)
