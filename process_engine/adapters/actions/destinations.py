"""Where the `http` action and notify webhooks may connect: HTTP_ACTION_ALLOW and the default.

A destination is checked after DNS resolution, and the connection goes to the very
address that was checked (the name is not resolved a second time), so a name that
resolves to a public address for the check and to 127.0.0.1 a moment later (DNS
rebinding) cannot reach loopback. Host header, TLS SNI and certificate checks keep
the name of the URL.

Without HTTP_ACTION_ALLOW every address is allowed except loopback, link-local
(169.254.0.0/16 with the cloud metadata service, fe80::/10) and unspecified ones, so
devices on the LAN work out of the box. With it, only the listed hosts and networks
are. The engine's own HTTP address is refused either way.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import typing
from collections.abc import Callable
from dataclasses import dataclass

import httpcore
import httpx

from process_engine.domain.errors import ActionError, ConfigError

SETTING = "HTTP_ACTION_ALLOW"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to; socket.getaddrinfo unless a test injects one.
Resolver = Callable[[str, int], list[str]]
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the order the system gives them."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(address[4][0]) for address in found))


@dataclass(frozen=True)
class AllowList:
    """HTTP_ACTION_ALLOW parsed: host names (`*.lan` for a whole domain) and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AllowList | None:
        """None for an empty setting (the default applies).

        Raises:
            ConfigError: an entry that is neither a host name nor an address or CIDR, named.
        """
        entries = [entry.strip().lower() for entry in (text or "").split(",") if entry.strip()]
        if not entries:
            return None
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or ":" in entry or not _HOST_NAME.fullmatch(entry) or entry.replace(".", "").isdigit():
                raise ConfigError(
                    f"{SETTING} entry {entry!r} is not a host name, an address or a CIDR "
                    "(e.g. HTTP_ACTION_ALLOW=printer.lan,*.plant.example,10.0.0.0/8,127.0.0.1)"
                )
            hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_name(self, host: str) -> bool:
        """True when the URL's host name itself is listed (then every address it has is allowed)."""
        name = host.lower().rstrip(".")
        return name in self.hosts or any(entry[1:] and name.endswith(entry[1:]) for entry in self.hosts if entry.startswith("*."))

    def allows_address(self, address: IpAddress) -> bool:
        """True when the address is inside a listed network."""
        return any(address in network for network in self.networks)


@dataclass
class DestinationPolicy:
    """Decides which addresses actions may connect to; see the module docstring."""

    allow: AllowList | None = None
    resolve: Resolver = system_resolver
    own: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_setting(cls, text: str | None, resolve: Resolver = system_resolver) -> DestinationPolicy:
        """The policy of an HTTP_ACTION_ALLOW value (ConfigError when malformed)."""
        return cls(AllowList.parse(text), resolve)

    def summary(self) -> str:
        """The policy in one line, for the start-up log."""
        if self.allow is None:
            return f"http actions may call any address but loopback, link-local and unspecified ones ({SETTING} is not set)"
        listed = sorted(self.allow.hosts) + [str(network) for network in self.allow.networks]
        return f"http actions may call only {', '.join(listed)} ({SETTING})"

    def serving(self, host: str, port: int) -> None:
        """Note the engine's own HTTP address, which actions may never call."""
        if port:  # a new set, not add(): action threads read it without a lock
            self.own = self.own | {(host, port)}

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of host:port that may be connected to, in order.

        Raises:
            ActionError: not retriable when every address is refused (naming why and
                HTTP_ACTION_ALLOW); retriable when the name does not resolve.
        """
        try:
            resolved = self.resolve(host, port)
        except (OSError, UnicodeError) as error:
            raise ActionError(f"cannot resolve {host}: {error}") from None
        refusals, allowed = [], []
        for text in resolved:
            reason = self.refusal(host, ipaddress.ip_address(text.split("%")[0]), port)
            (refusals if reason else allowed).append(reason or text)
        if not allowed:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ActionError(f"destination {where} refused: {'; '.join(refusals) or 'no address'}", retriable=False)
        return allowed

    def refusal(self, host: str, address: IpAddress, port: int) -> str | None:
        """Why the address may not be connected to, or None."""
        plain = _unmapped(address)
        if self._is_own(plain, port):
            return f"{plain} port {port} is the engine's own HTTP address (PROCESS_ENGINE_HTTP_ADDR)"
        if self.allow is not None:
            if self.allow.allows_name(host) or self.allow.allows_address(plain):
                return None
            return f"{plain} is not in {SETTING} (add the host or a network to it)"
        kind = _blocked_kind(plain)
        if kind:
            return f"{plain} is {kind}, which actions may not call by default (list it in {SETTING} to allow it)"
        return None

    def _is_own(self, address: IpAddress, port: int) -> bool:
        for host, own_port in self.own:
            if own_port != port:
                continue
            if host in ("", "0.0.0.0", "::"):  # every address of this machine
                if _is_local(address):
                    return True
            elif _same_host(host, address):
                return True
        return False


def _unmapped(address: IpAddress) -> IpAddress:
    """::ffff:127.0.0.1 is 127.0.0.1: checked as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _blocked_kind(address: IpAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives at 169.254.169.254)"
    if address.is_unspecified or address in ipaddress.ip_network("0.0.0.0/8"):
        return "an unspecified address (it reaches this machine)"
    return None


def _is_local(address: IpAddress) -> bool:
    """True when the address belongs to this machine: binding to it succeeds."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _same_host(host: str, address: IpAddress) -> bool:
    try:
        return _unmapped(ipaddress.ip_address(host)) == address
    except ValueError:
        return host == "localhost" and address.is_loopback


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects to the addresses the policy allows for a name, never resolving it again."""

    def __init__(self, policy: DestinationPolicy):
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.policy.addresses(host, port):
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:  # the next address may answer
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("actions do not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class CheckedTransport(httpx.HTTPTransport):
    """httpx's transport, connecting only where `policy` allows; no proxies from the environment.

    A proxy would be the one address checked, whatever the URL: none is used.
    """

    def __init__(self, policy: DestinationPolicy):
        super().__init__(trust_env=False)
        # httpx has no public hook for name resolution; its connection pool takes a network
        # backend, so the pool is rebuilt with one that checks (and pins) every connection.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_CheckedBackend(policy),
        )


__all__ = ["AllowList", "CheckedTransport", "DestinationPolicy", "system_resolver"]
