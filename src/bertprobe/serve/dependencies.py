"""What the routers share: the app's :class:`~bertprobe.serve.slot.ModelSlot` and the model it
serves, as FastAPI dependencies, and the headers that name the model that answered."""

from collections.abc import AsyncIterator
from typing import Annotated

from bertprobe.core.extras import needs_extra
from bertprobe.serve.slot import LoadedModel, ModelSlot

with needs_extra("serve"):
    from fastapi import Depends, Request, Response


def get_slot(request: Request) -> ModelSlot:
    """The app's model slot (the lifespan starts and stops it)."""
    slot: ModelSlot = request.app.state.slot
    return slot


async def served_model(
    slot: Annotated[ModelSlot, Depends(get_slot)],
) -> AsyncIterator[LoadedModel]:
    """The model serving now, taken once for the request and held until it ends: a reload
    that swaps it meanwhile leaves the whole request to this one, and retires it after.
    (Async: a plain generator would run in a thread, away from the slot's event loop.)"""
    with slot.taken() as loaded:
        yield loaded


Slot = Annotated[ModelSlot, Depends(get_slot)]
Served = Annotated[LoadedModel, Depends(served_model)]


def name_model(request: Request, response: Response, loaded: LoadedModel) -> None:
    """Say which model answers: in the answer's headers, and in the access log's line."""
    request.state.model_id = loaded.model_id
    response.headers["X-Model-ID"] = loaded.model_id
    response.headers["X-Model"] = loaded.name
