"""GetUrl / DnsLookup: the agent makes the request a policy action asks for.

The event pipeline only calls ``submit``, which never blocks: a request is queued
(bounded), or dropped and counted when the queue is full or the rate limit is reached.
A fixed number of worker threads (the maximum of concurrent requests) make the requests
with timeouts: an HTTP GET whose body is read up to ``max_body`` bytes and discarded,
or a DNS query for A and AAAA records (dnspython, against /etc/resolv.conf's servers or
the ones configured). Results are counted, never turned into events: the event itself
carries the action (KPROBE_ACTION_GETURL / KPROBE_ACTION_DNSLOOKUP), as in Tetragon.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vigil.actions_net")


@dataclass(frozen=True)
class RequestLimits:
    workers: int = 4              # requests in flight at most
    queue: int = 256              # requests waiting at most
    rate: float = 20.0            # requests started per second (token bucket) ...
    burst: int = 40               # ... with this burst
    timeout: float = 5.0          # seconds per request (connect + read; DNS lifetime)
    max_body: int = 64 << 10      # bytes of an HTTP body read at most
    dns_servers: tuple[str, ...] = ()  # host or host:port; empty: /etc/resolv.conf
    dns_port: int = 53


class Requester:
    """Bounded, rate-limited executor of GetUrl / DnsLookup requests."""

    def __init__(self, limits: RequestLimits | None = None) -> None:
        self.limits = limits or RequestLimits()
        self._q: queue.Queue[tuple[str, str] | None] = queue.Queue(self.limits.queue)
        self._lock = threading.Lock()
        self._tokens = float(self.limits.burst)
        self._last = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        # (kind, result) -> count; result: ok | error | timeout | dropped_queue_full |
        # dropped_rate_limited
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._resolver: Any = None  # a dns.resolver.Resolver, made on first use

    # ---- the event path -------------------------------------------------------------------

    def submit(self, kind: str, target: str) -> bool:
        """Queue a request ("url" or "dns"); never blocks. False: dropped (counted)."""
        if self._stopped:
            return False
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.limits.burst),
                               self._tokens + (now - self._last) * self.limits.rate)
            self._last = now
            if self._tokens < 1.0:
                self.counts[(kind, "dropped_rate_limited")] += 1
                return False
            self._tokens -= 1.0
            if not self._threads:
                self._start()
        try:
            self._q.put_nowait((kind, target))
        except queue.Full:
            with self._lock:
                self.counts[(kind, "dropped_queue_full")] += 1
            return False
        return True

    # ---- workers ----------------------------------------------------------------------------

    def _start(self) -> None:
        for i in range(self.limits.workers):
            t = threading.Thread(target=self._work, name=f"vigil-request-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            kind, target = item
            try:
                result = self._get(target) if kind == "url" else self._lookup(target)
            except Exception as err:  # noqa: BLE001 - a failed request is counted, never fatal
                result = "timeout" if "timed out" in str(err).lower() or \
                    type(err).__name__ in ("Timeout", "LifetimeTimeout") else "error"
                log.debug("%s %s: %s", kind, target, err)
            with self._lock:
                self.counts[(kind, result)] += 1

    def _get(self, url: str) -> str:
        import urllib.error  # with the first GetUrl action: most agents never need it
        import urllib.request
        req = urllib.request.Request(url, headers={"User-Agent": "vigil"})
        # no proxies from the environment: the policy names the server
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.limits.timeout) as resp:
                resp.read(self.limits.max_body)
        except urllib.error.HTTPError:
            return "ok"  # the server answered (the request was made)
        return "ok"

    def _lookup(self, fqdn: str) -> str:
        import dns.exception
        import dns.resolver

        if self._resolver is None:
            if self.limits.dns_servers:
                r = dns.resolver.Resolver(configure=False)
                r.nameservers = list(self.limits.dns_servers)
                r.port = self.limits.dns_port
            else:
                r = dns.resolver.Resolver()
            r.lifetime = self.limits.timeout
            r.timeout = self.limits.timeout
            self._resolver = r
        answered = False
        for rtype in ("A", "AAAA"):
            try:
                self._resolver.resolve(fqdn, rtype, search=False)
                answered = True
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                answered = True  # the server answered
            except dns.exception.Timeout:
                return "timeout"
        return "ok" if answered else "error"

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the workers (requests still queued are dropped, not counted)."""
        self._stopped = True
        while True:  # drop what is queued: the workers only have to see the stop
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            try:
                self._q.put_nowait(None)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def pending(self) -> int:
        return self._q.qsize()
