"""A stand-in Kubernetes API server for tests: the list/watch protocol, not Kubernetes.

It serves what Vigil's client reads, over HTTP/1.1 or HTTPS (``tls``):

- ``GET /api/v1/pods`` (``fieldSelector=spec.nodeName=N``), ``GET /api/v1/nodes``
  (``fieldSelector=metadata.name=N``), ``GET
  /apis/cilium.io/v1alpha1/tracingpolicies`` and ``.../tracingpoliciesnamespaced``:
  lists with ``limit`` / ``continue`` chunks and the list's ``resourceVersion``;
- ``GET /api/v1/nodes/<name>``: one node (404 Status when there is none);
- the same with ``watch=true``: events after ``resourceVersion`` as newline-delimited
  JSON in a chunked response, ``BOOKMARK`` events when ``allowWatchBookmarks`` is set,
  an ``ERROR`` event with a 410 Status when the resourceVersion was compacted away,
  the end of the stream at ``timeoutSeconds``;
- ``Authorization: Bearer <token>`` checked (401 Status otherwise); paths listed in
  ``forbidden`` answer 403.

Fault injection for the bad-input tests: ``cut_next_watch`` writes half an event and
drops the connection, ``garbage_next_watch`` writes a line that is not JSON, ``compact()``
forgets history and ends open watches (410 for watchers coming back older), ``stop()`` takes the server away.

What it is not (the fidelity limit): no admission, validation, defaulting or schema
pruning of objects, no RBAC beyond the path list, no field selectors other than
``spec.nodeName`` and ``metadata.name``, no label selectors, no watch cache semantics beyond a linear event
log, one resourceVersion counter for every resource, no HTTP/2, no server-side apply.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

PODS = "/api/v1/pods"
NODES = "/api/v1/nodes"
TP = "/apis/cilium.io/v1alpha1/tracingpolicies"
TPN = "/apis/cilium.io/v1alpha1/tracingpoliciesnamespaced"
RESOURCES = (PODS, NODES, TP, TPN)


def _field_selector(sel: str) -> Callable[[dict[str, Any]], bool]:
    """``spec.nodeName=N`` or ``metadata.name=N`` (the two the client uses) -> a test."""
    field, _eq, want = sel.partition("=")
    if field == "spec.nodeName":
        return lambda o: (o.get("spec") or {}).get("nodeName") == want
    if field == "metadata.name":
        return lambda o: (o.get("metadata") or {}).get("name") == want
    return lambda o: True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class StandinApiServer:
    def __init__(self, token: str = "test-token", bookmark_interval: float = 0.3,
                 tls: tuple[str, str] | None = None) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.forbidden: set[str] = set()
        self.cut_next_watch = False
        self.garbage_next_watch = False
        self.requests: list[str] = []
        self._cond = threading.Condition()
        self._rv = 100
        self._objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCES}
        self._log: list[tuple[int, str, str, dict[str, Any]]] = []
        self._oldest = 0  # watches from before this resourceVersion get 410
        self._epoch = 0   # compaction count: open watches end when it changes
        self._closing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._get(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:  # (cert file, key file): HTTPS
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="standin-apiserver")

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> StandinApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    # -- state ---------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (ADDED / MODIFIED event)."""
        with self._cond:
            self._rv += 1
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self._rv)
            key = f"{meta.get('namespace', '')}/{meta['name']}"
            old = self._objects[resource].get(key)
            if old is None or old.get("spec") != obj.get("spec"):
                meta["generation"] = int((old or {}).get("metadata", {}).get("generation", 0)) + 1
            else:
                meta["generation"] = old["metadata"].get("generation", 1)
            kind = "MODIFIED" if old is not None else "ADDED"
            self._objects[resource][key] = json.loads(json.dumps(obj))
            self._log.append((self._rv, resource, kind, json.loads(json.dumps(obj))))
            self._cond.notify_all()
            return obj

    def delete(self, resource: str, namespace: str, name: str) -> None:
        with self._cond:
            obj = self._objects[resource].pop(f"{namespace}/{name}")
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._log.append((self._rv, resource, "DELETED", obj))
            self._cond.notify_all()

    def raw_event(self, resource: str, line: str) -> None:
        """Queue a raw watch line (any text) as if it were an event."""
        with self._cond:
            self._rv += 1
            self._log.append((self._rv, resource, "RAW", {"line": line}))
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: watchers at older versions get 410 Gone."""
        with self._cond:
            self._oldest = self._rv + 1
            self._log.clear()
            self._epoch += 1
            self._rv += 1
            self._cond.notify_all()

    # -- HTTP ----------------------------------------------------------------------

    def _send_json(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.requests.append(h.path)
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send_json(h, 401, _status(401, "Unauthorized", "Unauthorized"))
        if url.path in self.forbidden:
            return self._send_json(h, 403, _status(403, "Forbidden", f"{url.path} is forbidden"))
        if url.path.startswith(NODES + "/") and q.get("watch") not in ("true", "1"):
            with self._cond:
                obj = self._objects[NODES].get("/" + url.path[len(NODES) + 1:])
            if obj is None:
                return self._send_json(h, 404, _status(404, "NotFound", "node not found"))
            return self._send_json(h, 200, obj)
        if url.path not in self._objects:
            return self._send_json(h, 404, _status(404, "NotFound", "not found"))
        node = _field_selector(q.get("fieldSelector", ""))
        if q.get("watch") in ("true", "1"):
            return self._watch(h, url.path, q, node)
        with self._cond:
            items = [o for _k, o in sorted(self._objects[url.path].items()) if node(o)]
            rv = str(self._rv)
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items) or 1
        chunk = items[start:start + limit]
        meta: dict[str, Any] = {"resourceVersion": rv}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        self._send_json(h, 200, {"kind": "List", "apiVersion": "v1", "metadata": meta,
                                 "items": chunk})

    def _watch(self, h: BaseHTTPRequestHandler, path: str, q: dict[str, str],
               node: Callable[[dict[str, Any]], bool]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        def event(kind: str, obj: dict[str, Any]) -> None:
            chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        rv = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 30)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        next_bookmark = time.monotonic() + self.bookmark_interval
        epoch = self._epoch
        try:
            if rv and rv < self._oldest:
                event("ERROR", _status(410, "Expired",
                                       f"too old resource version: {rv} ({self._oldest})"))
                chunk(b"")
                return
            while True:
                with self._cond:
                    pending = [e for e in self._log if e[0] > rv and e[1] == path]
                    if not pending and not self._closing:
                        self._cond.wait(0.05)
                        pending = [e for e in self._log if e[0] > rv and e[1] == path]
                    if self._epoch != epoch:  # compacted: watchers must come back
                        chunk(b"")
                        return
                    if self._closing:  # the server goes away: so does the connection
                        h.close_connection = True
                        h.connection.shutdown(2)
                        return
                    cut, self.cut_next_watch = self.cut_next_watch and bool(pending), \
                        self.cut_next_watch and not pending
                    garbage, self.garbage_next_watch = self.garbage_next_watch, False
                    current = self._rv
                if garbage:
                    chunk(b'{"type": "MODIFIED", "object": {"metadata": \n')
                for erv, _p, kind, obj in pending:
                    rv = erv
                    if kind == "RAW":
                        chunk(obj["line"].encode() + b"\n")
                        continue
                    if not node(obj):
                        continue
                    if cut:  # half an event, then the connection drops
                        data = json.dumps({"type": kind, "object": obj}).encode()
                        chunk(data[: len(data) // 2])
                        h.close_connection = True
                        h.wfile.flush()
                        h.connection.shutdown(2)
                        return
                    event(kind, obj)
                now = time.monotonic()
                if bookmarks and now >= next_bookmark:
                    event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                       "metadata": {"resourceVersion": str(max(rv, current))}})
                    rv = max(rv, current)
                    next_bookmark = now + self.bookmark_interval
                if now >= deadline:
                    chunk(b"")
                    return
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
