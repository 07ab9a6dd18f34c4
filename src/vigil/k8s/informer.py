"""List + watch of one Kubernetes resource with the official client.

The loop: list (in chunks of ``page`` with ``continue``) -> hand the full set to
``on_sync`` -> watch from the list's resourceVersion with bookmarks -> each ADDED /
MODIFIED / DELETED object to ``on_event``; BOOKMARK moves the resourceVersion on. A
watch that ends (server timeout, broken connection, a malformed line) resumes from the
last resourceVersion seen; 410 Gone (too old) re-lists. 401/403 and an unreachable API
server are retried with exponential backoff (capped), logged once per kind of failure
in a row. Every failure is counted in ``errors`` by reason; nothing here blocks the
agent's event pipeline: the loop runs in its own thread and the callbacks only update
in-memory state.

Objects come as plain dicts (not the client's models) so one malformed object is one
counted error, not a failed watch. A watch line over ``max_object_bytes`` is skipped
and counted (``oversized``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vigil.k8s")

Obj = dict[str, Any]

REASONS = ("list_failed", "watch_failed", "unauthorized", "forbidden", "gone", "tls",
           "malformed", "oversized", "unreachable", "handler")


class Informer:
    """One resource's list + watch loop (thread ``vigil-k8s-<name>``).

    ``list_fn(**kw)`` / ``watch_fn(**kw)`` are the client's list function for the
    resource (e.g. ``CoreV1Api.list_pod_for_all_namespaces``), called with
    ``_preload_content=False``; ``kwargs`` are passed to both (field selectors ...).
    """

    def __init__(self, name: str, list_fn: Callable[..., Any],
                 on_sync: Callable[[list[Obj]], None],
                 on_event: Callable[[str, Obj], None], *, kwargs: dict[str, Any] | None = None,
                 page: int = 500, watch_timeout: int = 300, backoff: float = 0.5,
                 max_backoff: float = 30.0, max_object_bytes: int = 2 << 20) -> None:
        self.name = name
        self._list = list_fn
        self._on_sync = on_sync
        self._on_event = on_event
        self._kwargs = dict(kwargs or {})
        self.page = page
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_object_bytes = max_object_bytes
        self.errors: Counter[str] = Counter()
        self.events = 0
        self.lists = 0
        self.resource_version = ""
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None
        self._last_failure = ""

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"vigil-k8s-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()  # shuts the socket down: the blocked read returns
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        delay = self.backoff
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch_once()
                delay = self.backoff
                self._last_failure = ""
            except _Gone:
                self.errors["gone"] += 1
                log.info("k8s %s: resourceVersion %s expired (410 Gone): re-listing",
                         self.name, self.resource_version)
                need_list = True
            except Exception as err:  # noqa: BLE001 - every failure: count, back off, retry
                if self._stop.is_set():  # stop() shut the watch's socket
                    return
                reason = _reason(err)
                self.errors[reason] += 1
                if reason == "gone":  # the watch's ERROR event, raised by the client
                    log.info("k8s %s: resourceVersion %s expired (410 Gone): re-listing",
                             self.name, self.resource_version)
                    need_list = True
                    continue
                if reason != self._last_failure:
                    log.warning("k8s %s: %s: %s (retrying)", self.name, reason, _short(err))
                    self._last_failure = reason
                if reason in ("list_failed", "unauthorized", "forbidden", "unreachable", "tls") \
                        and not self.synced.is_set():
                    need_list = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    # -- list ----------------------------------------------------------------------

    def _relist(self) -> None:
        items: list[Obj] = []
        token = None
        rv = ""
        while True:
            kw = dict(self._kwargs, limit=self.page, _preload_content=False,
                      _request_timeout=(10, 60))
            if token:
                kw["_continue"] = token
            try:
                resp = self._list(**kw)
                body = json.loads(resp.data)
            except json.JSONDecodeError as err:
                raise _Failure("list_failed", f"list response is not JSON: {err}") from err
            meta = body.get("metadata") or {} if isinstance(body, dict) else {}
            if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
                raise _Failure("list_failed", "list response has no items")
            for item in body.get("items") or ():
                if not isinstance(item, dict):
                    self.errors["malformed"] += 1
                elif len(json.dumps(item)) > self.max_object_bytes:
                    self.errors["oversized"] += 1
                    log.warning("k8s %s: listed object over %d bytes skipped", self.name,
                                self.max_object_bytes)
                else:
                    items.append(item)
            rv = str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                break
        self.lists += 1
        self.resource_version = rv
        try:
            self._on_sync(items)
        except Exception as err:
            self.errors["handler"] += 1
            log.exception("k8s %s: sync handler failed: %s", self.name, err)
        self.synced.set()

    # -- watch ---------------------------------------------------------------------

    def _watch_once(self) -> None:
        w = _raw_watch()
        self._watch = w
        try:
            kw = dict(self._kwargs, resource_version=self.resource_version,
                      allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout,
                      _request_timeout=(10, self.watch_timeout + 30))
            if self._stop.is_set():
                return
            stream = w.stream(self._list, **kw)
            while not self._stop.is_set():
                try:
                    ev = next(stream)
                except StopIteration:
                    return
                except json.JSONDecodeError as err:  # a line cut or garbled mid-event
                    self.errors["malformed"] += 1
                    log.warning("k8s %s: malformed watch line (%s): resuming from %s",
                                self.name, err, self.resource_version)
                    return
                self._handle(ev)
        finally:
            self._watch = None
            w.stop()

    def _handle(self, ev: Any) -> None:
        if not isinstance(ev, dict) or not isinstance(ev.get("object"), dict):
            self.errors["malformed"] += 1
            return
        kind, obj = ev.get("type"), ev["object"]
        rv = (obj.get("metadata") or {}).get("resourceVersion") \
            if isinstance(obj.get("metadata"), dict) else None
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise _Failure("watch_failed", f"watch error {code}: {obj.get('message', '')}")
        if rv:
            self.resource_version = str(rv)
        if kind == "BOOKMARK":
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self.errors["malformed"] += 1
            return
        if len(json.dumps(obj)) > self.max_object_bytes:
            self.errors["oversized"] += 1
            log.warning("k8s %s: %s object over %d bytes skipped", self.name, kind,
                        self.max_object_bytes)
            return
        self.events += 1
        try:
            self._on_event(kind, obj)
        except Exception as err:  # noqa: BLE001 - one bad object never stops the watch
            self.errors["handler"] += 1
            log.warning("k8s %s: %s event not applied: %s", self.name, kind, _short(err))


def _raw_watch() -> Any:
    """The client's Watch, handing out events as parsed JSON: objects stay dicts (one
    malformed object is one counted error, not a failed deserialization of the
    stream), and a line that is not JSON comes out as None (counted, skipped)."""
    from kubernetes import watch

    class RawWatch(watch.Watch):
        def get_return_type(self, func: Any) -> str:
            return ""

    return RawWatch()


class _Gone(Exception):
    pass


class _Failure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(err: BaseException) -> str:
    if isinstance(err, _Failure):
        return err.reason
    status = getattr(err, "status", None)
    if status == 0 and "SSL" in str(getattr(err, "reason", "")):  # the client's TLS failure
        return "tls"
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status == 410:
        return "gone"
    if isinstance(status, int) and status:
        return "list_failed"
    name = type(err).__name__
    if "SSLError" in str(err):  # the server's certificate refused, under a retry error
        return "tls"
    if "MaxRetry" in name or "NewConnection" in name or isinstance(err, ConnectionError):
        return "unreachable"
    return "watch_failed"


def _short(err: BaseException) -> str:
    status = getattr(err, "status", None)
    if status:
        return f"HTTP {status} {getattr(err, 'reason', '')}".strip()
    return f"{type(err).__name__}: {str(err)[:200]}"
