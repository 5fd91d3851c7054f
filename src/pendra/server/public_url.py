"""The one rule for the control plane's externally visible URL.

Every URL Pendra prints or shows for others to use — the worker command (``pendra workers add``,
the console's Add worker dialog, the line ``pendra server`` prints at start), the console's API
snippets, ``pendra up``'s banner — comes from ``public_base``; nothing else builds one.

Rules, first that applies:
1. ``PUBLIC_URL`` (config key ``public_url``, or ``--public-url``) when set: the operator knows
   the name and port that others reach (a DNS name, a reverse proxy with TLS, a forwarded port).
2. The listen address when it is a specific one (``127.0.0.1``, ``10.0.0.5``): that is where the
   server can be reached.
3. For a wildcard listen address (``0.0.0.0``, ``::``), this machine's own address: the source
   address of its default route, found by "connecting" a UDP socket (no packet is sent); failing
   that, the address its hostname resolves to; failing both, loopback (and the source says so).

``PublicUrl.source`` says which rule gave the URL, in words an operator can act on; daemons print
it beside the URL.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

from pendra.config import ServerSettings

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
# Documentation-only addresses (RFC 5737, RFC 3849): connecting a UDP socket to one only asks the
# kernel which source address the route would use; nothing is sent anywhere.
_PROBE = {socket.AF_INET: ("192.0.2.1", 9), socket.AF_INET6: ("2001:db8::1", 9)}

FROM_CONFIG = "from PUBLIC_URL"
FROM_LISTEN = "the listen address; set PUBLIC_URL if others reach it by another name"
FROM_MACHINE = ("this machine's address, as the server listens on every interface; set "
                "PUBLIC_URL if workers reach it by another name")
FROM_LOOPBACK = ("loopback: no address of this machine was found; set PUBLIC_URL so other hosts "
                 "can reach it")


@dataclass(frozen=True)
class PublicUrl:
    """The base URL others use (``http[s]://host[:port][/path]``, no trailing slash) and which
    rule chose it."""

    url: str
    source: str

    @property
    def ws_url(self) -> str:
        """The same place as a WebSocket base (``ws[s]://…``)."""
        return "ws" + self.url[len("http"):]

    @property
    def api_url(self) -> str:
        return self.url + "/api/v1"


def machine_address(family: socket.AddressFamily = socket.AF_INET) -> str | None:
    """This machine's address on its default route, or its hostname's; None when neither is a
    non-loopback address."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE[family])
            address = str(probe.getsockname()[0])
        if not _is_loopback(address):
            return address
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM)
    except OSError:
        return None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not _is_loopback(address):
            return address
    return None


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def _http(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_url(host: str, port: int) -> str:
    """Where a process on this machine reaches a server listening on host:port (loopback for a
    wildcard address): what server.yaml records for the local CLI, and ``pendra up``'s worker."""
    if host in WILDCARDS:
        host = "::1" if host == "::" else "127.0.0.1"
    return _http(host, port)


def public_base(settings: ServerSettings) -> PublicUrl:
    """The control plane's public base URL by the rules above (``settings.port`` must be the
    bound port, not 0)."""
    if settings.public_url:
        return PublicUrl(settings.public_url.rstrip("/"), FROM_CONFIG)
    if settings.host not in WILDCARDS:
        return PublicUrl(_http(settings.host, settings.port), FROM_LISTEN)
    family = socket.AF_INET6 if settings.host == "::" else socket.AF_INET
    address = machine_address(family)
    if address is None:
        loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        return PublicUrl(_http(loopback, settings.port), FROM_LOOPBACK)
    return PublicUrl(_http(address, settings.port), FROM_MACHINE)


def resolved(settings: ServerSettings, public: PublicUrl) -> ServerSettings:
    """``settings`` with the public URL fixed to ``public`` (daemons resolve it once at start, so
    every page and command of this run shows the same one)."""
    return replace(settings, public_url=public.url)
