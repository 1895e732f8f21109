"""Config changes made on both nodes of the pair, or on neither.

A change is made on the active node (keepalived's MASTER): API apply, API reload or
SIGHUP. Before it goes live there, it is prepared on the peer over the sync channel
(`POST /api/v1/ha/sync/config/prepare`): the config's text and every file it names
(certificates, keys, CAs, token files), which the peer checks with the same loader
and prepares exactly as a reload of its own (listen addresses bound, certificates
loaded, workers asked). Only when both have prepared do both commit; a peer that
refuses leaves both as they were, and the answer says why. A peer that cannot be
reached does not block the change: the active node commits alone and the watcher
brings the peer up to date when it answers again (the higher generation wins; on
a tie, the active node's config).

On the peer, the files are put in place for the preparation (a reload reads them
where the config names them) and the previous contents are kept: a refusal, a
discard from the active node, or no commit within `ha.config_sync_timeout` puts them back.
The config file itself is written (atomically, the old one kept as FILE.previous)
only at the commit. The passive node takes no edit of its own: the API answers 409
and a SIGHUP whose files changed is refused and logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from medlb.atomic import write_atomically
from medlb import logs
from medlb.config import ConfigError, LoadedConfig
from medlb.config.files import named_files
from medlb.config.loader import parse_config
from medlb.dataplane import Refused
from medlb.ha.channel import PairSync, PeerUnreachable, sync_routes
from medlb.ha.generation import ConfigGeneration
from medlb.tasks import spawn

if TYPE_CHECKING:
    from medlb.control import Control, PendingReload, ReloadResult

log = logs.get_logger("medlb.ha")

#: How long a prepare waits for a reload in progress on the peer before it is refused.
LOCK_WAIT = 10.0
#: Seconds before the watcher tries again to bring a peer up to date that refused.
CATCH_UP_RETRY = 30.0
#: The peer's answers that judge the sync request, not the config (a sync token that
#: differs, no `ha:` there): the peer is treated as unreachable, not as refusing.
NOT_A_REFUSAL = (401, 403, 404)


class PeerRefused(Exception):
    """The peer cannot take the config; `problems` say why, in its words."""

    def __init__(self, peer: str, problems: list[str]):
        super().__init__(f"the peer {peer} refused: {'; '.join(problems)}")
        self.peer, self.problems = peer, problems


@dataclass(frozen=True)
class Bundle:
    """A config as it travels between the nodes: the text, and each file it names by
    its path as written (relative paths are taken from each node's config folder)."""

    text: str
    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, loaded: LoadedConfig) -> "Bundle":
        """The running (or just loaded) config with its files as they are on disk."""
        files: dict[str, bytes] = {}
        for name in names_in(loaded.text):
            with contextlib.suppress(OSError):  # the loader read it; a file gone since is the peer's problem
                files[name] = resolve(loaded.base_dir, name).read_bytes()
        return cls(loaded.text, files)

    @functools.cached_property
    def hash(self) -> str:
        """Asked several times per change (refusal, generation, prepare): hashed once."""
        digest = hashlib.sha256(self.text.encode("utf-8"))
        for name in sorted(self.files):
            digest.update(b"\0" + name.encode("utf-8") + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "files": {name: base64.b64encode(data).decode() for name, data in
                                             self.files.items()}}

    @classmethod
    def from_json(cls, body: Any) -> "Bundle":
        """Raises ValueError saying what is wrong with a bundle the peer sent."""
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not isinstance(body.get("files"),
                                                                                                dict):
            raise ValueError("the body needs text and files")
        try:
            files = {str(name): base64.b64decode(data, validate=True) for name, data in body["files"].items()}
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"a file is not base64: {exc}") from None
        bundle = cls(body["text"], files)
        named = set(names_in(bundle.text))
        if named != set(files):
            raise ValueError(f"the files sent ({', '.join(sorted(files)) or 'none'}) are not the files the config "
                             f"names ({', '.join(sorted(named)) or 'none'})")
        return bundle


def names_in(text: str) -> list[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    return named_files(data) if isinstance(data, dict) else []


def resolve(base_dir: Path, written: str) -> Path:
    path = Path(written)
    return path if path.is_absolute() else base_dir / path


@dataclass
class Previous:
    """A file as it was before a bundle's file was put in its place."""

    path: Path
    data: bytes | None
    mode: int

    def put_back(self) -> None:
        try:
            if self.data is None:
                self.path.unlink(missing_ok=True)
            else:
                write_atomically(self.path, self.data, self.mode)
        except OSError as exc:
            log.error("ha_sync_file_not_restored", path=str(self.path), error=exc.strerror)


def put_in_place(base_dir: Path, files: dict[str, bytes]) -> list[Previous]:
    """Write each file that differs; what was there before, to put back."""
    previous: list[Previous] = []
    try:
        for name, data in files.items():
            path = resolve(base_dir, name)
            try:
                old: bytes | None = path.read_bytes()
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                old, mode = None, 0o600
            if old == data:
                continue
            previous.append(Previous(path, old, mode))
            write_atomically(path, data, mode)
    except OSError:
        for item in reversed(previous):
            item.put_back()
        raise
    return previous


class Host(Protocol):
    """What config sync needs of the running medlb (App)."""

    config_path: Path
    loaded: LoadedConfig
    reload_lock: asyncio.Lock

    def load_text(self, text: str) -> LoadedConfig: ...

    async def prepare_reload(self, loaded: LoadedConfig) -> "PendingReload": ...

    async def commit_reload(self, pending: "PendingReload", who: str, source: str = "",
                            generation: tuple[int, str] | None = None) -> "ReloadResult": ...


@dataclass
class PeerPrepared:
    """The active node's view of one prepare on the peer."""

    id: str | None
    unreachable: str | None = None


@dataclass
class Staged:
    """A config prepared on this node for the peer's commit."""

    id: str
    pending: "PendingReload"
    text: str
    generation: tuple[int, str]
    previous: list[Previous]
    expiry: asyncio.TimerHandle | None = None


class ConfigSync:
    def __init__(self, host: Host, pair: PairSync, generation: ConfigGeneration, timeout: float):
        self.host, self.pair, self.generation = host, pair, generation
        #: `ha.config_sync_timeout`: how long the active node waits for the peer's
        #: prepare, commit and config answers, and how long the peer keeps a prepared
        #: config for the active node's commit.
        self.timeout = timeout
        self.staged: Staged | None = None
        #: Why the peer is not up to date (it was unreachable or refused), for the view.
        self.peer_behind: str | None = None
        self._catching_up = False
        self._retry_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        pair.listeners.append(self._after_poll)

    @property
    def me(self) -> str:
        return self.pair.node.name

    @property
    def peer(self) -> str:
        return self.pair.peer.name

    # --- the active node's side -------------------------------------------------------

    def bundle(self, loaded: LoadedConfig) -> Bundle:
        return Bundle.of(loaded)

    def next_generation(self, bundle: Bundle) -> tuple[int, str]:
        """The generation a config becomes: the same for the same config, else one more."""
        generation, digest = self.generation.current()
        return (generation, digest) if bundle.hash == digest else (generation + 1, bundle.hash)

    def edit_refusal(self, bundle: Bundle | None, by_signal: bool) -> str | None:
        """Why this node takes no config change now, or None. The passive node refuses
        every API edit, and a SIGHUP whose config or files changed (one that changes
        nothing re-reads the same files, which is harmless)."""
        role = self.pair.role()
        peer_active = self.pair.state.up and self.pair.state.role == "MASTER"
        if role != "BACKUP" and not (role != "MASTER" and peer_active):
            return None
        if by_signal and bundle is not None and bundle.hash == self.generation.hash:
            return None
        why = f"{self.me} is the passive node of the pair: edit the active node {self.peer}, which syncs it here"
        return f"SIGHUP with a changed config refused: {why}" if by_signal else why

    async def prepare_peer(self, bundle: Bundle, generation: tuple[int, str],
                           force: bool = False) -> PeerPrepared | None:
        """Prepare a changed config on the peer; None when nothing changed (unless
        `force`: catching up). A peer that cannot be reached is noted (it is brought up
        to date later); raises PeerRefused."""
        if generation == self.generation.current() and not force:
            return None
        body = {**bundle.as_json(), "generation": generation[0], "hash": generation[1]}
        try:
            status, answer = await self.pair.client.call("POST", "/config/prepare", body, self.timeout)
            if status in NOT_A_REFUSAL:
                raise PeerUnreachable.answered(self.peer, status, answer)
        except PeerUnreachable as exc:
            self.peer_behind = f"unreachable at generation {generation[0]}: {exc}"
            log.warning("ha_config_peer_unreachable", peer=self.peer, generation=generation[0], error=str(exc),
                        action="committed on this node alone; the peer is brought up to date when it answers")
            return PeerPrepared(None, str(exc))
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("prepared"), str):
            return PeerPrepared(answer["prepared"])
        problems = answer.get("problems") if isinstance(answer, dict) else None
        if not problems:
            problems = [answer.get("error", f"HTTP {status}") if isinstance(answer, dict) else f"HTTP {status}"]
        log.warning("ha_config_peer_refused", peer=self.peer, generation=generation[0], problems=problems)
        raise PeerRefused(self.peer, [str(problem) for problem in problems])

    async def commit_peer(self, prepared: PeerPrepared | None, generation: tuple[int, str]) -> str | None:
        """Commit on the peer what it prepared; what became of it, in words."""
        if prepared is None:
            return None
        if prepared.id is None:
            return (f"the peer {self.peer} is unreachable ({prepared.unreachable}); it takes generation "
                    f"{generation[0]} when it answers again")
        try:
            status, answer = await self.pair.client.call("POST", "/config/commit", {"id": prepared.id},
                                                         self.timeout)
        except PeerUnreachable as exc:
            status, answer = 0, {"error": str(exc)}
        if status != 200:
            why = answer.get("error") if isinstance(answer, dict) else answer
            self.peer_behind = f"did not confirm generation {generation[0]}: {why}"
            log.error("ha_config_peer_commit_failed", peer=self.peer, generation=generation[0], error=str(why))
            return (f"the peer {self.peer} prepared but did not confirm the commit ({why}); it is brought up to "
                    "date when it answers")
        self.peer_behind = None
        return f"the peer {self.peer} runs it too (generation {generation[0]})"

    # --- catching up ------------------------------------------------------------------

    def _after_poll(self, pair: PairSync) -> None:
        if self._catching_up or pair.role() != "MASTER" or not pair.state.up or pair.config_in_sync \
                or time.monotonic() < self._retry_at or self.host.reload_lock.locked():
            return  # (a reload in progress brings the peer along itself)
        self._catching_up = True
        task = spawn(self._catch_up())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self) -> None:
        """The active node brings a peer that runs another config up to date: the higher
        generation wins; on a tie the active node's config."""
        try:
            async with self.host.reload_lock:  # no reload of this node's own in between
                await self.pair.poll()  # as the peer is now, not as it was before the lock was free
                if self.pair.role() != "MASTER" or not self.pair.state.up or self.pair.config_in_sync:
                    return
                mine, theirs = self.generation.generation, self.pair.state.generation
                if theirs is not None and theirs > mine:
                    await self._take_peers()
                else:
                    await self._push()
        except (PeerUnreachable, PeerRefused) as exc:
            self.peer_behind = str(exc)
            self._retry_at = time.monotonic() + CATCH_UP_RETRY
            log.warning("ha_config_catch_up_failed", peer=self.peer, error=str(exc), retry_in=CATCH_UP_RETRY)
        finally:
            self._catching_up = False

    async def _push(self) -> None:
        """With the reload lock held."""
        bundle = Bundle.of(self.host.loaded)
        generation = self.generation.current()
        if bundle.hash != generation[1]:
            self._retry_at = time.monotonic() + CATCH_UP_RETRY
            log.warning("ha_config_catch_up_waits", peer=self.peer,
                        reason="a file the running config names changed on disk since it was loaded; "
                               "reload this node first")
            return
        log.event("ha_config_catch_up", peer=self.peer, generation=generation[0],
                  peer_generation=self.pair.state.generation, direction="to the peer")
        prepared = await self.prepare_peer(bundle, generation, force=True)
        assert prepared is not None
        if prepared.id is None:
            raise PeerUnreachable(prepared.unreachable or f"the peer {self.peer} is unreachable")
        note = await self.commit_peer(prepared, generation)
        log.event("ha_config_caught_up", peer=self.peer, generation=generation[0], result=note)

    async def _take_peers(self) -> None:
        """The peer has a newer config (it committed alone while this node was away);
        with the reload lock held."""
        status, answer = await self.pair.client.call("GET", "/config", timeout=self.timeout)
        if status != 200 or not isinstance(answer, dict):
            raise PeerUnreachable(f"the peer {self.peer} did not give its config: HTTP {status}")
        try:
            bundle = Bundle.from_json(answer)
            generation = (int(answer["generation"]), bundle.hash)
        except (ValueError, KeyError, TypeError) as exc:
            raise PeerRefused(self.peer, [f"its config cannot be taken: {exc}"]) from None
        log.event("ha_config_catch_up", peer=self.peer, generation=self.generation.generation,
                  peer_generation=generation[0], direction="from the peer")
        try:
            staged = await self._stage(bundle, generation)
        except ConfigError as exc:
            raise PeerRefused(self.me, [str(problem) for problem in exc.problems]) from None
        except Refused as exc:
            raise PeerRefused(self.me, exc.reasons) from None
        await self._finish(staged, f"peer:{self.peer}", str(self.pair.peer.address))
        log.event("ha_config_caught_up", peer=self.peer, generation=generation[0], result="taken from the peer")
        self.peer_behind = None

    # --- the peer's side ----------------------------------------------------------------

    async def receive_prepare(self, body: Any, source: str) -> tuple[int, dict[str, Any]]:
        """Prepare what the active node sent; (status, answer)."""
        if self.pair.role() == "MASTER":
            return 409, {"error": f"{self.me} is the active node itself: it takes no config from {self.peer}"}
        try:
            bundle = Bundle.from_json(body)
            generation = (int(body["generation"]), str(body["hash"]))
        except (ValueError, KeyError, TypeError) as exc:
            return 422, {"error": f"the config sent cannot be taken: {exc}"}
        if bundle.hash != generation[1]:
            return 422, {"error": "the config sent does not match its hash: it was damaged on the way"}
        try:
            await asyncio.wait_for(self.host.reload_lock.acquire(), LOCK_WAIT)
        except TimeoutError:
            return 409, {"error": f"{self.me} is busy with another reload; try again"}
        try:
            staged = await self._stage(bundle, generation)
        except ConfigError as exc:
            self.host.reload_lock.release()
            return 422, {"error": f"{self.me} cannot run the config", "problems": [str(p) for p in exc.problems]}
        except Refused as exc:
            self.host.reload_lock.release()
            return 422, {"error": f"{self.me} cannot run the config", "problems": exc.reasons}
        except BaseException:
            self.host.reload_lock.release()
            raise
        staged.expiry = asyncio.get_running_loop().call_later(self.timeout, lambda: spawn(self._expire(staged)))
        self.staged = staged
        log.event("ha_config_prepared", peer=self.peer, generation=generation[0], source=source)
        return 200, {"prepared": staged.id}

    async def receive_commit(self, body: Any, source: str) -> tuple[int, dict[str, Any]]:
        staged = self._take_staged(body)
        if staged is None:
            return 409, {"error": f"{self.me} holds no prepared config with that id (it is kept "
                                  f"{self.timeout:g} s); nothing changed"}
        try:
            await self._finish(staged, f"peer:{self.peer}", source)
        finally:
            self.host.reload_lock.release()
        return 200, {"committed": staged.generation[0]}

    async def receive_discard(self, body: Any) -> tuple[int, dict[str, Any]]:
        staged = self._take_staged(body)
        if staged is None:
            return 409, {"error": "no prepared config with that id"}
        try:
            await self._abandon(staged)
        finally:
            self.host.reload_lock.release()
        return 200, {"discarded": staged.generation[0]}

    def _take_staged(self, body: Any) -> Staged | None:
        staged = self.staged
        sent = body.get("id") if isinstance(body, dict) else None
        if staged is None or not isinstance(sent, str) or not secrets.compare_digest(sent, staged.id):
            return None
        self.staged = None
        if staged.expiry is not None:
            staged.expiry.cancel()
        return staged

    async def _expire(self, staged: Staged) -> None:
        if self.staged is not staged:
            return
        self.staged = None
        log.warning("ha_config_prepare_expired", peer=self.peer, generation=staged.generation[0],
                    reason=f"no commit within {self.timeout:g} s; nothing changed")
        try:
            await self._abandon(staged)
        finally:
            self.host.reload_lock.release()

    async def _stage(self, bundle: Bundle, generation: tuple[int, str]) -> Staged:
        """Check and prepare a bundle with the reload lock held; raises ConfigError or
        Refused with every file as it was."""
        base = self.host.config_path.resolve().parent
        parse_config(bundle.text, str(self.host.config_path), base)  # the text alone, before any file is touched
        try:
            previous = put_in_place(base, bundle.files)
        except OSError as exc:
            raise Refused(f"cannot write a file the config names: {exc.filename}: {exc.strerror}") from None
        try:
            loaded = self.host.load_text(bundle.text)
            pending = await self.host.prepare_reload(loaded)
        except BaseException:
            for item in reversed(previous):
                item.put_back()
            raise
        return Staged(secrets.token_hex(16), pending, bundle.text, generation, previous)

    async def _finish(self, staged: Staged, who: str, source: str) -> None:
        path = self.host.config_path
        with contextlib.suppress(OSError):
            old = path.read_bytes()
            write_atomically(path.with_name(path.name + ".previous"), old, path.stat().st_mode & 0o777)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        write_atomically(path, staged.text.encode("utf-8"), mode)
        await self.host.commit_reload(staged.pending, who, source, staged.generation)
        log.event("ha_config_committed", who=who, generation=staged.generation[0])

    async def _abandon(self, staged: Staged) -> None:
        await staged.pending.prepared.discard()
        for item in reversed(staged.previous):
            item.put_back()

    def view(self) -> dict[str, Any]:
        return {"generation": self.generation.generation, "hash": self.generation.hash,
                "peer_behind": self.peer_behind}


@sync_routes
def _config_routes(routes: APIRouter, control: "Control") -> None:
    def sync() -> ConfigSync:
        found = control.config_sync
        assert found is not None  # sync_caller answered 404 otherwise
        return found

    def source(request: Request) -> str:
        return request.client.host if request.client else ""

    async def body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None  # each receiver refuses a body that is not what it takes

    @routes.post("/config/prepare")
    async def prepare(request: Request) -> JSONResponse:
        """Check and prepare the active node's config and files; commit or discard follows."""
        status, answer = await sync().receive_prepare(await body(request), source(request))
        return JSONResponse(answer, status_code=status)

    @routes.post("/config/commit")
    async def commit(request: Request) -> JSONResponse:
        status, answer = await sync().receive_commit(await body(request), source(request))
        return JSONResponse(answer, status_code=status)

    @routes.post("/config/discard")
    async def discard(request: Request) -> JSONResponse:
        status, answer = await sync().receive_discard(await body(request))
        return JSONResponse(answer, status_code=status)

    @routes.get("/config")
    async def running() -> dict[str, Any]:
        """This node's running config and its files, for a peer with an older one."""
        found = sync()
        generation, digest = found.generation.current()
        return {**Bundle.of(control.loaded).as_json(), "generation": generation, "hash": digest}
