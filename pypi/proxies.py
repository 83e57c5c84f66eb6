"""Who the client is: the peer, or, behind proxies the operator trusts, the address they forward.

``[server] trusted_proxies`` names the proxies (the CDN's edge, a load
balancer, a Varnish) by address or network; it is empty by default: no peer
is trusted, not even 127.0.0.1. Every request passes ``TrustedProxies.apply``
before anything reads it:

- from a peer that is not a trusted proxy, ``X-Forwarded-*`` and ``Forwarded``
  are removed, so nothing the application does (the login throttle's client
  address, a cacheable page) can depend on a header anyone may send;
- from a trusted proxy, ``REMOTE_ADDR`` becomes the client it forwarded for:
  the rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy
  (each proxy appends the address it saw, so entries left of the first
  untrusted one are the client's own claims and are ignored). The peer is kept
  in ``environ["cloudpypi.proxy_addr"]``.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable

#: The environ keys of forwarding headers (X-Forwarded-For, -Host, -Proto, -Port, ..., Forwarded).
_FORWARDED = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_")
PROXY_ADDR = "cloudpypi.proxy_addr"
#: Addresses whose verdict is remembered (a busy index sees a few proxies, or many clients).
_MEMO_MAX = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks as networks; ValueError names one that is neither."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(out)


def _address(entry: str) -> str | None:
    """The IP address in one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


class TrustedProxies:
    """The operator's trusted proxies (none by default) and what they may tell the application."""

    def __init__(self, networks: Iterable[Network | str] = ()) -> None:
        self.networks = tuple(n if not isinstance(n, str) else parse_networks([n])[0] for n in networks)
        self._memo: dict[str, bool] = {}
        self._lock = threading.Lock()

    def trusts(self, addr: str) -> bool:
        """Whether ``addr`` (an IP address as text) is one of the trusted proxies."""
        if not self.networks:
            return False
        found = self._memo.get(addr)
        if found is not None:
            return found
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            verdict = False
        else:
            verdict = any(ip in net for net in self.networks)
        with self._lock:
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[addr] = verdict
        return verdict

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer`` itself unless it is a trusted proxy that forwarded one."""
        client = peer
        if not forwarded_for or not self.trusts(peer):
            return client
        for entry in reversed(forwarded_for.split(",")):
            addr = _address(entry)
            if addr is None:  # not written by a proxy: the chain of trust ends here
                break
            client = addr
            if not self.trusts(addr):
                break
        return client

    def apply(self, environ: dict) -> None:
        """Strip forwarding headers from an untrusted peer; behind trusted ones, set the client's
        address as ``REMOTE_ADDR`` (the proxy's in ``cloudpypi.proxy_addr``)."""
        peer = environ.get("REMOTE_ADDR") or ""
        if self.trusts(peer):
            client = self.client(peer, environ.get("HTTP_X_FORWARDED_FOR"))
            environ[PROXY_ADDR] = peer
            environ["REMOTE_ADDR"] = client
            return
        for key in [k for k in environ if k.startswith(_FORWARDED)]:
            del environ[key]
