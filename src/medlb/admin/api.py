"""The REST API under /api/v1, /metrics and /healthz.

Every route but /healthz, /api/v1/login and the page's static files needs a bearer
token or a logged-in session; the role decides what it may change (viewer: read;
operator: server and pool states, failback; admin: also reload and the config).
Errors are JSON `{"error": "..."}` with the HTTP status that says what went wrong.
A request's body is judged before it is read (admin/bodies.py): a caller who may not
use the route is refused on the headers, and a body over its cap gets 413.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from medlb import __version__
from medlb.admin import config_text, metrics
from medlb.admin.audit_text import describe_entry
from medlb.admin.bodies import BodyGate
from medlb.admin.views import masked_config, server_view, service_view
from medlb.config import ConfigError, LoadedConfig, Problem
from medlb.config.loader import parse_config
from medlb.kernel.host import local_addresses
from medlb.config.models import AdminConfig
from medlb.ha import channel
from medlb.runtime import Conflict, NotFound

STATIC = Path(__file__).parent / "static"

#: The page loads nothing from anywhere but this server; the browser enforces it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

from medlb.admin.auth import Principal
from medlb.admin.sessions import COOKIE, LoginRefused

if TYPE_CHECKING:
    from medlb.admin.console import Console
    from medlb.control import Control, ReloadResult


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


class StateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["online", "drain", "halt"]


class FailbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: str | None = None


class PoolStateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["online", "drain", "halt"]
    tier: Literal["primary", "backup"] = "primary"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    password: str


class UnlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None
    address: str | None = None


class ConfigText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: What anyone may call; every other path needs a token or a session.
PUBLIC_PATHS = ("/", "/healthz", "/api/v1/login", "/api/v1/session")


def caller(request: Request) -> Principal:
    """The bearer token's principal, or the logged-in user's; else 401.

    A change made with the session cookie must carry the session's CSRF token in the
    X-CSRF-Token header (a bearer token is not sent by browsers on their own, so it
    needs none), and an Origin header, when the browser sends one, must be this host.
    """
    console: Console = request.app.state.console
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        found = None
        for secret, principal in console.tokens.items():
            # Compare with every token in constant time, so timing tells nothing about any.
            if hmac.compare_digest(secret.encode(), token.strip().encode()):
                found = principal
        if found is None:
            pair = console.control.pair_sync
            if pair is not None and pair.is_token(token.strip()):
                raise ApiError(403, channel.SYNC_ON_OPERATOR)  # the pair's secret is no principal
            raise ApiError(401, "the token is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return found
    session_id = request.cookies.get(COOKIE, "")
    admin = console.admin
    # The page marks its automatic refreshes, so that only a person's own requests
    # count against the idle timeout.
    touch = request.headers.get("x-medlb-background") != "1"
    session = console.sessions.lookup(session_id, admin, touch) if session_id and admin is not None else None
    if session is None:
        raise ApiError(401, "log in, or send a bearer token" if not session_id else "the session has ended; log in again",
                       {"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise ApiError(403, "the CSRF token is missing or wrong; reload the page")
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            raise ApiError(403, "the request comes from another site")
    return Principal(session.user, session.role, session.id)


Caller = Annotated[Principal, Depends(caller)]


def refuse_before_body(scope: Any) -> Response | None:
    """The answer for a caller who may not use the route, judged on the headers before
    the body is read (the routes' own `Caller` would only run after it is)."""
    if scope["path"] in PUBLIC_PATHS or scope["path"].startswith("/static/"):
        return None
    try:
        if scope["path"].startswith(channel.SYNC_PREFIX + "/"):
            channel.sync_caller(Request(scope))
        else:
            caller(Request(scope))
    except ApiError as exc:
        return exc.response()
    except channel.SyncRefused as exc:
        return sync_refused(exc)
    return None


def sync_refused(exc: channel.SyncRefused) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


def advisories(loaded: LoadedConfig) -> list[str]:
    """What `medlb check` advises about a file medlb accepts (never a refusal)."""
    return [str(advisory) for advisory in loaded.advisories]


def iso(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="seconds")


def confirmed(body: dict[str, Any], not_answered: list[int]) -> JSONResponse:
    """An action's answer: 200 when every worker confirmed it; 202 when some did not
    within the settle time (it is stored and in force everywhere else; they take it
    when they run again), naming them."""
    if not_answered:
        return JSONResponse({**body, "settled": False, "workers_not_answered": not_answered}, status_code=202)
    return JSONResponse({**body, "settled": True})


def csv_response(filename: str, columns: list[str], rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        # A cell starting with = + - @ is a formula to a spreadsheet: neutralise it.
        # ("" in "=+-@" is true: an empty cell stays empty.)
        writer.writerow({k: ("'" + v if isinstance(v, str) and v and v[0] in "=+-@" else v) for k, v in row.items()})
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def create_api(control: "Control", console: "Console | None" = None) -> FastAPI:
    """The API over `control`; `console` holds the admin side's tokens, sessions,
    live streams and history (a new one, reading the config's tokens, if not given)."""
    if console is None:
        from medlb.admin.console import Console

        console = Console(control)
    api = FastAPI(title="medlb admin API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None)
    api.state.console = console

    def admin_config() -> AdminConfig:
        return control.loaded.config.admin or AdminConfig()  # a reload that drops `admin:`: the defaults

    # Added first, so it runs inside the middleware below and its answers carry the
    # same security headers.
    api.add_middleware(BodyGate, admin=admin_config, refuse=refuse_before_body)

    @api.middleware("http")
    async def _json_bodies(request: Request, call_next: Any) -> Response:
        # `curl -d '{"state": "halt"}'` sends a form content type; every body this API
        # takes is JSON, so read it as JSON whatever the client called it.
        if request.method == "POST":
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = headers + [(b"content-type", b"application/json")]
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(channel.SyncRefused)
    async def _sync_refused(request: Request, exc: channel.SyncRefused) -> JSONResponse:
        return sync_refused(exc)

    @api.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @api.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if part != "body")
            if error["type"] == "json_invalid":
                problems.append("the body is not JSON")
            elif error["type"] == "literal_error":
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

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @api.get("/metrics", include_in_schema=False)
    async def get_metrics(principal: Caller) -> Response:
        await control.collect()
        kernel = await control.l4_counters()
        return Response(metrics.render(control, console, kernel, await control.ha_view()),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi(principal: Caller) -> dict[str, Any]:
        return api.openapi()

    @api.get("/api/v1/services")
    async def list_services(principal: Caller) -> list[dict[str, Any]]:
        """Every virtual service with its pools and servers."""
        await control.collect()
        return [service_view(service) for service in control.services.values()]

    @api.get("/api/v1/workers")
    async def workers(principal: Caller) -> dict[str, Any]:
        """The data-plane processes: `workers: 1` runs the data plane in this process."""
        await control.collect()
        processes = control.worker_views()
        if processes is None:
            return {"workers": 1, "processes": []}
        return {"workers": len(processes), "processes": processes}

    @api.get("/api/v1/ha")
    async def get_ha(principal: Caller) -> dict[str, Any]:
        """This node of the clustered pair: its role as keepalived reports it (MASTER,
        BACKUP, FAULT, STOP), since when, the peer, and the VIPs on its interface now."""
        view = await control.ha_view()
        if view is None:
            raise ApiError(404, "this medlb is not a node of a pair: its config has no ha: section")
        return view

    @api.post("/api/v1/ha/{action}")
    async def ha_hand_over(action: Literal["release", "takeover"], principal: Caller,
                           request: Request) -> dict[str, Any]:
        """Move the VIPs (admin): release gives them to the peer, takeover takes them;
        409, nothing changed, when it would do nothing. Answers once the role settled
        or the wait ran out, saying which."""
        require(principal, "admin")
        return await control.ha_hand_over(action, principal.name, source(request))

    @api.get("/api/v1/services/{name}")
    async def get_service(name: str, principal: Caller) -> dict[str, Any]:
        await control.collect()
        return service_view(control.service(name))

    @api.get("/api/v1/services/{name}/l4")
    async def get_l4(name: str, principal: Caller, flows: bool = True) -> dict[str, Any]:
        """A layer 4 service as the kernel runs it: the rules medlb rendered (compare
        with `nft list table ...`), each server's mark, MAC, share and counters, and its
        flows (NAT: conntrack entries; DR: pins) unless `flows=false`."""
        return await control.l4_view(name, flows)

    @api.get("/api/v1/services/{name}/servers/{server}")
    async def get_server(name: str, server: str, principal: Caller) -> dict[str, Any]:
        await control.collect()
        return server_view(control.server(name, server), control.service(name))

    @api.post("/api/v1/services/{name}/servers/{server}/state")
    async def set_state(name: str, server: str, body: StateRequest, principal: Caller,
                        request: Request) -> JSONResponse:
        """Set a server's operator state; stored and audited before the answer."""
        require(principal, "operator")
        changes = control.set_state(name, server, body.state, principal.name, source(request))
        not_answered = await control.settle()
        await control.collect()
        return confirmed({"server": server_view(control.server(name, server), control.service(name)),
                          "changes": [c.as_dict() for c in changes]}, not_answered)

    @api.post("/api/v1/services/{name}/failback")
    async def failback(name: str, principal: Caller, request: Request,
                       body: FailbackRequest | None = None) -> JSONResponse:
        """Leave the backup cluster for the primaries (failback: manual); 409 with the
        reason when nothing would leave it (not failed over, no primary online)."""
        require(principal, "operator")
        pool = body.pool if body else None
        service = control.service(name)
        kept = service.failback_refusals(pool) if pool is None or pool in service.pools else {}
        changes = control.failback(name, principal.name, pool, source(request))
        not_answered = await control.settle()
        await control.collect()
        return confirmed({"service": service_view(control.service(name)), "changes": [c.as_dict() for c in changes],
                          **({"not_failed_back": kept} if kept else {})}, not_answered)

    @api.post("/api/v1/reload")
    async def reload(principal: Caller, request: Request) -> JSONResponse:
        """Re-read the config file; a file medlb cannot run is refused (422; 503 when a
        worker did not answer) and nothing changes anywhere."""
        require(principal, "admin")
        return reloaded(await control.reload(principal.name, source(request)),
                        "the config file was refused; the running config stays")

    @api.post("/api/v1/services/{name}/pools/{pool}/state")
    async def set_pool_state(name: str, pool: str, body: PoolStateRequest, principal: Caller,
                             request: Request) -> JSONResponse:
        """Set every server of a pool's tier: halting the primary tier fails the pool
        over to its backup cluster; online brings it back. Stored and audited first."""
        require(principal, "operator")
        changes = control.set_pool_state(name, pool, body.tier, body.state, principal.name, source(request))
        not_answered = await control.settle()
        await control.collect()
        return confirmed({"service": service_view(control.service(name)),
                          "changes": [c.as_dict() for c in changes]}, not_answered)

    @api.get("/api/v1/audit", response_model=None)
    async def audit(principal: Caller, limit: int = 100, before_id: int | None = None, q: str = "",
                    format: str = "json") -> Any:
        """Operator actions, newest first; q filters (any field contains it); format=csv exports."""
        entries = [{**e, "text": describe_entry(e)}
                   for e in control.audit_entries(max(1, min(limit, 10000)), before_id, q)]
        if format == "csv":
            return csv_response("medlb-audit.csv", ["id", "at", "who", "action", "target", "text", "detail", "source"],
                                [{**e, "at": iso(e["at"]), "detail": json.dumps(e["detail"], sort_keys=True)}
                                 for e in entries])
        return entries

    @api.get("/api/v1/events", response_model=None)
    async def events(principal: Caller, limit: int = 100, service: str = "", q: str = "",
                     format: str = "json") -> Any:
        """Recent health, state and pool changes (kept in memory), newest first."""
        found = [e for e in reversed(control.events) if (not service or e["service"] == service)
                 and (not q or q.lower() in json.dumps(e).lower())][: max(1, min(limit, 2000))]
        if format == "csv":
            return csv_response("medlb-events.csv", ["at", "kind", "service", "subject", "old", "new", "reason", "who",
                                                     "text"],
                                [{**e, "at": iso(e["at"])} for e in found])
        return found

    @api.get("/api/v1/history")
    async def history(principal: Caller, service: str = "") -> dict[str, Any]:
        """The last hour of each service's numbers (sampled in memory), oldest first."""
        sampler = console.history
        names = [service] if service else list(control.services)
        return {"interval": sampler.interval if sampler else 0,
                "services": {n: sampler.of(n) if sampler else [] for n in names}}

    @api.get("/api/v1/stream")
    async def stream(principal: Caller, request: Request) -> StreamingResponse:
        """Server-sent events: every change and audit entry, as it happens."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        console.streams.add(queue)

        async def events() -> Any:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        admin = control.loaded.config.admin
                        if principal.session and (admin is None or console.sessions.lookup(
                                principal.session, admin, touch=False) is None):
                            break  # logged out or timed out
                        yield ": keep-alive\n\n"
                        continue
                    if message is None:
                        break
                    yield f"data: {json.dumps(message)}\n\n"
            finally:
                console.streams.discard(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- login ---------------------------------------------------------------------

    @api.post("/api/v1/login")
    async def login(body: LoginRequest, request: Request) -> JSONResponse:
        admin = control.loaded.config.admin
        assert admin is not None
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            raise ApiError(403, "the request comes from another site")  # no logging in from another page
        try:
            session = await console.sessions.login(body.name, body.password, source(request), admin)
        except LoginRefused as exc:
            # A name that is no user is not written down: people type their password
            # into the name field, and the audit log must never hold a password.
            who = body.name if any(user.name == body.name for user in admin.users) else "(unknown user)"
            control.audit(who, "login_locked" if exc.locked else "login_failed", "web", {}, source(request))
            raise ApiError(exc.status, exc.message) from None
        control.audit(session.user, "login", "web", {"role": session.role}, source(request))
        response = JSONResponse({"name": session.user, "role": session.role, "csrf": session.csrf})
        response.set_cookie(COOKIE, session.id, httponly=True, secure=True, samesite="strict", path="/")
        return response

    @api.post("/api/v1/unlock")
    async def unlock(body: UnlockRequest, principal: Caller, request: Request) -> dict[str, Any]:
        """Lift the login lock-out of a user (every address, or `address`) or of an
        address (admin); 409, changing nothing, when no such lock-out is in force."""
        require(principal, "admin")
        if not body.user and not body.address:
            raise ApiError(422, "name a user, an address or both")
        lifted = console.sessions.unlock(body.user or None, body.address or None)
        target = " from ".join(part for part in (f"user {body.user}" if body.user else "",
                                                  f"address {body.address}" if body.address else "") if part)
        if not lifted:
            raise ApiError(409, f"{target} is not locked out: nothing to lift")
        control.audit(principal.name, "unlock", target, {"user": body.user, "address": body.address,
                                                         "lifted": lifted}, source(request))
        return {"unlocked": lifted}

    @api.post("/api/v1/logout")
    async def logout(principal: Caller, request: Request) -> JSONResponse:
        if principal.session:
            console.sessions.logout(principal.session)
            control.audit(principal.name, "logout", "web", {}, source(request))
        response = JSONResponse({"status": "logged out"})
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    @api.get("/api/v1/session")
    async def whoami(request: Request) -> dict[str, Any]:
        """Who is calling. Without a token or a live session (the page's first load) the
        answer is 200 with no name, not a 401 that the browser reports as an error;
        `ended` says a session cookie came with it that no longer logs in."""
        cookie = request.cookies.get(COOKIE, "")
        admin = console.admin
        if not request.headers.get("authorization") and (
                not cookie or admin is None or console.sessions.lookup(cookie, admin, touch=False) is None):
            return {"name": None, "role": None, "csrf": None, "via": None, "ended": bool(cookie)}
        principal = caller(request)
        session = console.sessions.sessions.get(principal.session) if principal.session else None
        return {"name": principal.name, "role": principal.role, "csrf": session.csrf if session else None,
                "via": "session" if session else "token"}

    # --- config --------------------------------------------------------------------

    def check_text(text: str) -> tuple[LoadedConfig | None, list[Problem]]:
        base = control.config_path.resolve().parent
        try:
            # As a reload reads it: every file it names, and this host's addresses.
            loaded = parse_config(text, "uploaded file", base, read_files=True, local_hosts=local_addresses())
        except ConfigError as exc:
            return None, exc.problems
        if loaded.warnings:  # `medlb run` refuses these too
            return None, loaded.warnings
        return loaded, []

    def on_disk() -> str:
        try:
            return control.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiError(500, f"cannot read the config file {control.config_path}: "
                                f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None

    def running_secrets() -> list[str]:
        """The running config's inline secrets, masked wherever the file on disk holds
        them (it may not be YAML at all any more)."""
        admin = control.loaded.config.admin
        if admin is None:
            return []
        return [value for value in (admin.token, *(t.token for t in admin.tokens),
                                    *(u.password_hash for u in admin.users)) if value]

    def judged(text: str) -> tuple[str, LoadedConfig | None, list[Problem], str]:
        """An edited file as Apply would write it (the masks put back), whether medlb
        would load it, its problems at their lines, and the diff from the file on disk."""
        disk = on_disk()
        restored, problems = config_text.unmask(text, disk)
        loaded, found = check_text(restored)
        masked_lines = {problem.line for problem in problems}  # the mask's own problem says it better
        problems += [problem for problem in found if problem.line not in masked_lines]
        return restored, None if problems else loaded, problems, config_text.diff(disk, restored, running_secrets())

    def problem_answer(problems: list[Problem], disk: str) -> dict[str, Any]:
        """Problems as text and at their lines; a message never quotes a secret, but
        were one ever to, it goes out masked."""
        secrets = running_secrets() + config_text.secret_values(disk)
        located = [{key: config_text.hide(value, secrets) if isinstance(value, str) else value
                    for key, value in problem.items()} for problem in config_text.located(problems)]
        return {"problems": [problem["text"] for problem in located], "problems_at": located}

    @api.get("/api/v1/config")
    async def get_config(principal: Caller) -> dict[str, Any]:
        """The config file on disk as written, with inline secrets masked and its lines
        kept (`text`); the running config as data, masked alike (`config`); and whether
        the file on disk is what runs (it may have been edited since the last reload)."""
        require(principal, "admin")
        disk = on_disk()
        loaded, problems = check_text(disk)
        return {"path": str(control.config_path), "text": config_text.mask(disk, running_secrets()),
                "config": masked_config(control.loaded.config), "advisories": advisories(control.loaded),
                "disk_is_running": loaded is not None and loaded.config == control.loaded.config,
                **problem_answer(problems, disk)}

    @api.post("/api/v1/config/validate")
    async def validate_config(body: ConfigText, principal: Caller) -> dict[str, Any]:
        """The same problems `medlb check` prints, for an edited or uploaded file, at
        their lines; and the diff from the file on disk to what Apply would write."""
        require(principal, "admin")
        _, loaded, problems, changes = judged(body.text)
        return {"valid": not problems, **problem_answer(problems, on_disk()),
                "services": [s.name for s in loaded.config.services] if loaded else [],
                "advisories": advisories(loaded) if loaded else [], "diff": changes}

    @api.post("/api/v1/config/apply")
    async def apply_config(body: ConfigText, principal: Caller, request: Request) -> JSONResponse:
        """Write a valid file over the config file and reload; a refused reload puts the
        old file back. The previous file is kept beside it as FILE.previous. A mask left
        in the text keeps the secret on disk; one that stands for no secret there is
        refused, so the mask is never written into the file."""
        require(principal, "admin")
        restored, _, problems, _ = judged(body.text)
        if problems:
            return JSONResponse({"error": "the file is not valid; nothing changed",
                                 **problem_answer(problems, on_disk())},
                                status_code=422)
        result = await control.apply_config(restored, principal.name, source(request))
        return reloaded(result, "the reload was refused; the running config stays")

    def reloaded(result: "ReloadResult", refusal: str) -> JSONResponse:
        """A reload's answer: 422 refused for its problems, 503 refused because a worker
        did not answer, else as any action (200, or 202 naming unconfirmed workers)."""
        if result.conflict:
            return JSONResponse({"error": result.conflict}, status_code=409)
        if result.refused_by:
            refusal = f"the peer {result.refused_by} refused the config; neither node changed"
        if result.problems:
            body = {"error": refusal, "problems": [str(p) for p in result.problems]}
            if result.not_answered:
                return JSONResponse({**body, "settled": False, "workers_not_answered": result.not_answered},
                                    status_code=503)
            return JSONResponse(body, status_code=422)
        peer = {"peer": result.peer} if result.peer else {}
        return confirmed({"status": "reloaded", "services": sorted(control.services),
                          "advisories": advisories(control.loaded), **peer}, result.not_answered)

    api.include_router(channel.router(control))

    # --- the page ------------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    return api
