"""The REST API under /api/v1, /metrics and /healthz.

Every route but /healthz needs a bearer token; a token's role decides what it may
change (viewer: read; operator: server states and failback; admin: also reload).
Errors are JSON `{"error": "..."}` with the HTTP status that says what went wrong.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from medlb import __version__
from medlb.admin import metrics
from medlb.admin.views import server_view, service_view

from medlb.admin.auth import Principal

if TYPE_CHECKING:
    from medlb.app import App


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, message, headers


class StateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["online", "drain", "halt"]


class FailbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: str | None = None


def caller(request: Request) -> Principal:
    """The bearer token's principal, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    found = None
    for secret, principal in request.app.state.medlb.tokens.items():
        # Compare with every token in constant time, so timing tells nothing about any.
        if hmac.compare_digest(secret.encode(), token.strip().encode()):
            found = principal
    if found is None:
        raise ApiError(401, "the token is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return found


Caller = Annotated[Principal, Depends(caller)]


def create_api(app: "App") -> FastAPI:
    api = FastAPI(title="medlb admin API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None)
    api.state.medlb = app

    @api.middleware("http")
    async def _json_bodies(request: Request, call_next: Any) -> Response:
        # `curl -d '{"state": "halt"}'` sends a form content type; every body this API
        # takes is JSON, so read it as JSON whatever the client called it.
        if request.method == "POST":
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = headers + [(b"content-type", b"application/json")]
        return await call_next(request)

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if part != "body")
            if error["type"] == "literal_error":
                problems.append(f"{where} must be one of {error['ctx']['expected']}")
            else:
                problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code)

    def require(principal: Principal, role: str) -> None:
        if not principal.may(role):
            raise ApiError(403, f"this needs the {role} role; {principal.name} has {principal.role}")

    def source(request: Request) -> str:
        return request.client.host if request.client else ""

    def find_service(name: str) -> Any:
        service = app.runtime.services.get(name)
        if service is None:
            raise ApiError(404, f"no service named {name!r}")
        return service

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @api.get("/metrics", include_in_schema=False)
    async def get_metrics(principal: Caller) -> Response:
        return Response(metrics.render(app), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi(principal: Caller) -> dict[str, Any]:
        return api.openapi()

    @api.get("/api/v1/services")
    async def list_services(principal: Caller) -> list[dict[str, Any]]:
        """Every virtual service with its pools and servers."""
        return [service_view(service) for service in app.runtime.services.values()]

    @api.get("/api/v1/services/{name}")
    async def get_service(name: str, principal: Caller) -> dict[str, Any]:
        return service_view(find_service(name))

    @api.get("/api/v1/services/{name}/servers/{server}")
    async def get_server(name: str, server: str, principal: Caller) -> dict[str, Any]:
        found = find_service(name).server(server)
        if found is None:
            raise ApiError(404, f"service {name!r} has no server named {server!r}")
        return server_view(found)

    @api.post("/api/v1/services/{name}/servers/{server}/state")
    async def set_state(name: str, server: str, body: StateRequest, principal: Caller,
                        request: Request) -> dict[str, Any]:
        """Set a server's operator state; stored and audited before the answer."""
        require(principal, "operator")
        try:
            changes = app.set_state(name, server, body.state, principal.name, source(request))
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None
        found = app.runtime.services[name].server(server)
        return {"server": server_view(found), "changes": [c.as_dict() for c in changes]}  # type: ignore[arg-type]

    @api.post("/api/v1/services/{name}/failback")
    async def failback(name: str, principal: Caller, request: Request,
                       body: FailbackRequest | None = None) -> dict[str, Any]:
        """Leave the backup cluster for the primaries (failback: manual)."""
        require(principal, "operator")
        try:
            changes = app.failback(name, principal.name, body.pool if body else None, source(request))
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None
        return {"service": service_view(app.runtime.services[name]), "changes": [c.as_dict() for c in changes]}

    @api.post("/api/v1/reload")
    async def reload(principal: Caller, request: Request) -> dict[str, Any]:
        """Re-read the config file; an invalid file is refused (422) and nothing changes."""
        require(principal, "admin")
        problems = await app.reload(principal.name, source(request))
        if problems:
            return JSONResponse({"error": "the config file was refused; the running config stays",  # type: ignore[return-value]
                                 "problems": [str(p) for p in problems]}, status_code=422)
        return {"status": "reloaded", "services": sorted(app.runtime.services)}

    @api.get("/api/v1/audit")
    async def audit(principal: Caller, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        """Operator actions, newest first."""
        return app.store.audit_entries(max(1, min(limit, 1000)), before_id)

    @api.get("/api/v1/events")
    async def events(principal: Caller, limit: int = 100) -> list[dict[str, Any]]:
        """Recent health, state and pool changes (kept in memory), newest first."""
        return list(reversed(app.events))[: max(1, min(limit, 2000))]

    return api
