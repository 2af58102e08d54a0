"""The SSRF guard: where a webhook may be sent.

A webhook URL is `https` (or `http` when WEBHOOKS_ALLOW_HTTP is on), has no user or password,
and its host resolves only to globally routable addresses. Refused, whatever the spelling of
the address (decimal, octal or hex IPv4, IPv4-mapped or embedded in IPv6, a name resolving to
one): loopback, private (RFC 1918, fc00::/7, 100.64.0.0/10), link-local (169.254.0.0/16, which
holds cloud metadata services, and fe80::/10), multicast, unspecified, and the reserved and
documentation ranges. WEBHOOKS_ALLOW_PRIVATE_TARGETS (for tests and closed networks) allows
loopback and private addresses, and nothing else.

The host is resolved once per send, every address is checked, and the connection goes to the
checked address (notifications.sender), so DNS cannot answer differently between the check
and the connection (rebinding). The same check runs when an endpoint is created or updated,
for a clear 400, but only the send-time check is the guarantee.
"""

import concurrent.futures
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

import idna
from django.conf import settings

_SCHEMES = {"https": 443, "http": 80}
# IPv6 prefixes that embed an IPv4 address the packet really goes to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice


class ForbiddenTarget(ValueError):
    """The URL may not receive webhooks; the message names the reason."""


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `address`, present `host` (Host header and TLS name)."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def connect_url(self) -> str:
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == _SCHEMES[self.scheme] else f"{name}:{self.port}"


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (tests replace this to play DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


resolver = _resolve

# The lookups of checks bounded in time (`check(within=...)`: an endpoint's creation, in a web
# request). A lookup cannot be stopped; one that waits past its bound is dropped from the queue,
# one already running ends on its own, so a few threads do.
_BOUNDED_LOOKUPS = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="webhook-url-lookup"
)


def _lookup(host: str, port: int, within: float | None) -> list[str]:
    if within is None:
        return resolver(host, port)
    lookup = _BOUNDED_LOOKUPS.submit(resolver, host, port)
    try:
        return lookup.result(timeout=within)
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise UnresolvableTarget(
            f"The host {host!r} did not resolve within {within:g} s."
        ) from None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated), but still routed that way by some stacks.
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def address_problem(address: str, *, allow_private: bool | None = None) -> str | None:
    """Why `address` may not receive webhooks, or None when it may."""
    if allow_private is None:
        allow_private = settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_problem(str(embedded), allow_private=allow_private)
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if ip in _SHARED or _is_private_range(ip):
        return None if allow_private else "a private address"
    if not ip.is_global:
        return "a reserved or non-routable address"
    return None


_PRIVATE_RANGES = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _is_private_range(ip) -> bool:
    return any(ip.version == net.version and ip in net for net in _PRIVATE_RANGES)


def parse(url: str) -> SplitResult:
    """The URL's parts after the checks that need no DNS; ForbiddenTarget otherwise."""
    if not isinstance(url, str) or not url or len(url) > 2000:
        raise ForbiddenTarget("Enter a URL of at most 2000 characters.")
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise ForbiddenTarget("A URL cannot contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ForbiddenTarget(f"Not a valid URL: {error}.") from error
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ForbiddenTarget("Webhook URLs must use https.")
    if scheme == "http" and not settings.WEBHOOKS_ALLOW_HTTP:
        raise ForbiddenTarget("Webhook URLs must use https (http is not allowed here).")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ForbiddenTarget(
            "A webhook URL cannot carry a user name or password; receivers verify the "
            "signature instead."
        )
    if not parts.hostname:
        raise ForbiddenTarget("The URL has no host.")
    if "%" in parts.hostname:
        raise ForbiddenTarget("An IPv6 zone (%interface) names a link-local address.")
    if port == 0:
        raise ForbiddenTarget("The URL's port must be between 1 and 65535.")
    return parts


# What stays as it is in a URL's path, query and fragment: what RFC 3986 allows there, and '%'
# starting an escape the client already wrote (a '%' starting none is encoded, as %25).
# Anything else (non-ASCII, '"', '<', '[', '{', '|', ...) is percent-encoded as UTF-8; spaces
# and control characters cannot occur (parse refuses them).
_URI_SAFE = "!$&'()*+,/:;=?@~-._%"
_STRAY_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")
# A host name's characters in a URI (RFC 3986 reg-name, without escapes).
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]+")


def normalize(url: str) -> str:
    """The URL as it is stored and sent to, a URI: scheme and host lower-cased, an
    international host in its ASCII form (IDNA, `bücher.example` is `xn--bcher-kva.example`),
    other non-ASCII characters percent-encoded as UTF-8. ForbiddenTarget when parse refuses the
    URL or a non-ASCII host is not a domain name."""
    parts = parse(url)
    host = parts.hostname
    if not host.isascii():
        trailing = "." if host.endswith(".") else ""
        try:
            host = idna.encode(host.rstrip("."), uts46=True).decode() + trailing
        except idna.IDNAError as error:
            raise ForbiddenTarget(f"The host is not a valid domain name ({error}).") from None
    elif ":" not in host and not _REG_NAME.fullmatch(host):
        raise ForbiddenTarget("The host is not a valid domain name.")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    path, query, fragment = (
        _STRAY_PERCENT.sub("%25", quote(part, safe=_URI_SAFE)) for part in parts[2:]
    )
    return urlunsplit((parts.scheme.lower(), netloc, path, query, fragment))


def url_pattern() -> str:
    """What the API's schema can state of parse's rules, as a pattern: the scheme (http only
    where allowed), a host without user or password, no space or control character."""
    scheme = "[hH][tT][tT][pP][sS]?" if settings.WEBHOOKS_ALLOW_HTTP else "[hH][tT][tT][pP][sS]"
    visible = r"\u0000-\u0020\u007F"
    return f"^{scheme}://[^{visible}/?#@]+([/?#][^{visible}]*)?$"


def check(url: str, *, allow_private: bool | None = None, within: float | None = None) -> Target:
    """Resolve the URL's host and check every address: the Target to connect to, or
    ForbiddenTarget naming the reason. `within`: seconds the lookup may take before the host is
    taken as not resolving (UnresolvableTarget); None waits as long as the system resolver
    does (the relay, which bounds the whole attempt)."""
    parts = parse(url)
    scheme = parts.scheme.lower()
    host = parts.hostname.rstrip(".") if parts.hostname != "." else ""
    if not host:
        raise ForbiddenTarget("The URL has no host.")
    port = parts.port or _SCHEMES[scheme]
    try:
        addresses = _lookup(host, port, within)
    except (OSError, UnicodeError) as error:  # not UnresolvableTarget, a ValueError: it passes
        raise UnresolvableTarget(f"The host {host!r} does not resolve ({error}).") from error
    if not addresses:
        raise UnresolvableTarget(f"The host {host!r} does not resolve.")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            shown = "" if address == host else f" ({address})"
            raise ForbiddenTarget(
                f"The host {host!r} is{shown} {problem}: webhooks cannot go there."
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


class UnresolvableTarget(ForbiddenTarget):
    """The host does not resolve now: refused at creation, retried at send time (DNS may be
    down for a moment)."""
