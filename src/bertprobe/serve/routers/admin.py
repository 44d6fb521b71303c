"""The model's routes: ``GET /v1/model`` (its card) and ``POST /v1/admin/reload`` (load the
folder again, or another, and swap; admin: it always needs the key)."""

from typing import Annotated, Any

from bertprobe.core.extras import needs_extra
from bertprobe.serve.dependencies import Served, Slot, name_model
from bertprobe.serve.errors import ReloadUnderWay
from bertprobe.serve.schemas import RELOAD_ERRORS, UNAUTHORIZED, ReloadRequest, ReloadResponse
from bertprobe.serve.security import ApiKey

with needs_extra("serve"):
    from fastapi import APIRouter, Body, Depends, Request, Response


def model_router(keys: ApiKey) -> APIRouter:
    """The routes, behind ``keys``: the card behind the service's key (if any), the reload
    behind the admin check."""
    router = APIRouter()

    @router.get("/v1/model", dependencies=keys.keyed, responses={401: UNAUTHORIZED})
    async def model_card(request: Request, response: Response, loaded: Served) -> dict[str, Any]:
        """The model card: encoder, features, labels, C, metrics, data, versions."""
        name_model(request, response, loaded)
        return loaded.model.card

    @router.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(keys.require_admin)],
        responses=RELOAD_ERRORS,
    )
    async def reload_model(
        request: Request, slot: Slot, body: Annotated[ReloadRequest | None, Body()] = None
    ) -> ReloadResponse:
        """Load the model folder again (or ``model``, another folder) beside the one served,
        with the usual checks, and swap; a folder that fails them is refused and the old model
        serves on."""
        if slot.reloading:
            raise ReloadUnderWay
        swapped = await slot.reload(body.model if body else None)
        request.state.model_id = swapped.model_id
        return swapped

    return router
