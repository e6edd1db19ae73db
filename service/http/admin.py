"""Admin routes: rescan, unload and load a model, show the config. The access policy
(`service.auth`, applied by `service.http.middleware.RequestGate`) decides who may call them;
`_admitted` refuses them (403) too should that middleware be missing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException

from service.auth import ADMIN_DISABLED, ADMIN_GRANTED
from service.core.serving_config import ModelConfig
from service.http.dependencies import repository, request_record
from service.http.error_docs import NOT_FOUND, error_responses
from service.http.json_io import JSONBody

if TYPE_CHECKING:  # the repository imports TensorFlow: front-end workers must not
    from service.core.repository import ModelView


def _admitted(request: Request) -> None:
    if not request.scope.get(ADMIN_GRANTED):
        raise HTTPException(403, ADMIN_DISABLED)


MODEL_ERRORS = error_responses({403: ADMIN_DISABLED, 404: NOT_FOUND})

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    default_response_class=JSONBody,
    dependencies=[Depends(_admitted)],
)


@router.post("/reload", summary="Rescan the model repository now; the versions found per model")
async def reload(request: Request) -> JSONBody:
    """Lists every model's folder (or backend) now instead of at the next poll; new versions
    are listed again until their files stay the same and then start loading in the
    background (their state says how far they are)."""
    models = repository(request)
    await models.rescan(settled=True)
    return JSONBody({"models": [_listing(model) for model in models.models()]})


@router.post(
    "/models/{model}/unload",
    summary="Unload every version of a model until loaded",
    responses=MODEL_ERRORS,
)
async def unload(request: Request, model: str) -> JSONBody:
    """Frees the model's memory: each version unloads once the requests holding it finish
    (state UNLOADING, then END), and the model stays unloaded whatever appears on disk. Its
    requests get 503 meanwhile; readiness ignores it, so the replica stays in rotation."""
    listing = _listing(await repository(request).unload_model(model))
    request_record(request).model = model  # a served model: unload_model 404s otherwise
    return JSONBody(listing)


@router.post(
    "/models/{model}/load", summary="Serve a model again after an unload", responses=MODEL_ERRORS
)
async def load(request: Request, model: str) -> JSONBody:
    """The model's versions (per its version policy) load again; their state says how far."""
    listing = _listing(await repository(request).load_model(model))
    request_record(request).model = model
    return JSONBody(listing)


@router.get("/config", summary="The effective serving config, without file-system paths")
async def config(request: Request) -> JSONBody:
    """Each model's version policy (in the config file's form), labels, batching, placement
    and remote backend; base paths and asset folders are left out."""
    return JSONBody({"models": [_model(model.config) for model in repository(request).models()]})


def _listing(model: ModelView) -> dict[str, Any]:
    return {
        "name": model.name,
        "unloaded_by_admin": model.unloaded_by_admin,
        "versions_found": list(model.versions_found),
        "versions": [{"version": v.version, "state": v.state.value} for v in model.versions],
    }


def _model(config: ModelConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude={"base_path": True, "backend": {"assets"}})
