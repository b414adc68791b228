"""HTTP_ACTION_ALLOW and the default destination policy, decided on addresses (no network)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from process_engine.adapters.actions.destinations import AllowList, DestinationPolicy
from process_engine.domain.errors import ConfigError


def refusal(policy: DestinationPolicy, address: str, host: str = "device", port: int = 80) -> str | None:
    return policy.refusal(host, ip_address(address), port)


def test_the_default_lets_lan_devices_through() -> None:
    default = DestinationPolicy()
    for address in ("192.168.1.20", "10.0.0.7", "172.16.4.4", "fd12::7", "8.8.8.8", "2001:db8::1"):
        assert refusal(default, address) is None, address
    for address, kind in (("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
                          ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
                          ("0.1.2.3", "unspecified"), ("::", "unspecified")):
        assert kind in (refusal(default, address) or ""), address


def test_allow_list_entries() -> None:
    allow = AllowList.parse(" printer.lan, *.plant.example ,10.0.0.0/8, 127.0.0.1, [::1], fd00::/8 ")
    assert allow is not None and allow.hosts == frozenset({"printer.lan", "*.plant.example"})
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"]
    policy = DestinationPolicy(allow)
    assert refusal(policy, "192.168.1.20", "printer.lan") is None  # the name is listed: any of its addresses
    assert refusal(policy, "127.0.0.1", "PRINTER.LAN.") is None
    assert refusal(policy, "192.168.1.21", "line-3.plant.example") is None
    assert refusal(policy, "10.9.9.9") is None and refusal(policy, "fd00::5") is None
    assert "not in HTTP_ACTION_ALLOW" in refusal(policy, "192.168.1.21", "plant.example.evil")
    assert "not in HTTP_ACTION_ALLOW" in refusal(policy, "169.254.169.254")
    assert AllowList.parse("") is None and AllowList.parse(" , ") is None


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0", "printer lan", "http://printer.lan", "printer.lan:80", "300.1.1.1", "*", "a..b"])
def test_a_malformed_entry_is_one_line_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AllowList.parse(f"printer.lan,{entry}")
    message = str(caught.value)
    assert message.startswith(f"HTTP_ACTION_ALLOW entry {entry.lower()!r}") and "\n" not in message


def test_the_engines_own_address_is_refused_whatever_the_allow_list() -> None:
    policy = DestinationPolicy.from_setting("0.0.0.0/0,::/0")
    policy.serving("0.0.0.0", 8080)
    assert "engine's own HTTP address" in refusal(policy, "127.0.0.1", port=8080)
    assert refusal(policy, "127.0.0.1", port=8081) is None
    assert refusal(policy, "192.0.2.200", port=8080) is None  # not an address of this machine
    named = DestinationPolicy.from_setting("127.0.0.1")
    named.serving("localhost", 9000)
    assert "engine's own" in refusal(named, "127.0.0.1", port=9000)
