"""The client address sign-in throttles count by (dashboard/throttle/address.py)."""

import pytest

from dashboard.throttle.address import client_address, scope_address


@pytest.mark.parametrize(
    ("seen", "counted"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),  # one /64: one subscriber
        ("2001:DB8:1:2::1", "2001:db8:1:2::"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # IPv4 on a dual-stack socket
        ("", None),
        (None, None),
        ("not-an-address", None),
        ("198.51.100.7, 203.0.113.1", None),  # a header's list is never an address
    ],
)
def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64(seen, counted):
    assert client_address(seen) == counted


def test_a_sockets_address_is_its_asgi_client():
    assert scope_address({"client": ("2001:db8::5", 50000)}) == "2001:db8::"
    assert scope_address({"client": None}) is None
    assert scope_address({}) is None
