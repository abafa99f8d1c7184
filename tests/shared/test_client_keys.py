"""Rate-limit keys: an IPv6 client is its /64 network (configurable), an IPv4 one its address."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from shared.config import ConfigError, load_config
from shared.rate_limiter import client_key

pytestmark = pytest.mark.unit


def test_ipv6_addresses_of_one_64_share_a_key_ipv4_are_their_own() -> None:
    assert (
        client_key("2001:db8:1:2:aaaa::1")
        == client_key("2001:db8:1:2:ffff:ffff:ffff:fffe")
        == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("2001:db8:1:2::1", 128) == "2001:db8:1:2::1/128"
    assert client_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"  # IPv4-mapped: the IPv4 itself
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("not:an:address") == "not:an:address"  # not parseable: the text itself


def test_the_prefix_is_a_setting_within_bounds() -> None:
    assert load_config("svc", environ={}, env_file=None)["RATE_LIMIT_IPV6_PREFIX"] == 64
    assert (
        load_config("svc", environ={"RATE_LIMIT_IPV6_PREFIX": "56"}, env_file=None)["RATE_LIMIT_IPV6_PREFIX"]
        == 56
    )
    assert "ipv6_prefix" not in load_config("svc", environ={}, env_file=None)["RATE_LIMITS"]  # not a route
    with pytest.raises(ConfigError):
        load_config("svc", environ={"RATE_LIMIT_IPV6_PREFIX": "8"}, env_file=None)


def test_a_client_rotating_addresses_inside_its_64_shares_one_budget(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=None, RATE_LIMIT_DEFAULT=3)
    client = app.test_client()
    codes = [
        client.get("/plain", environ_base={"REMOTE_ADDR": f"2001:db8:7:7::{n:x}"}).status_code
        for n in range(1, 6)
    ]
    assert codes == [200, 200, 200, 429, 429]
    other = client.get("/plain", environ_base={"REMOTE_ADDR": "2001:db8:7:8::1"})
    assert other.status_code == 200  # another /64: another client
