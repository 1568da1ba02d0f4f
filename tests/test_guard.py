"""The guessing guard: wrong PINs and passwords counted per address and per target, lockouts that
double when guessing goes on, a site that logged in before is not locked out by an attacker."""
from __future__ import annotations

from gateway.guard import FailureGuard, source_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_address_is_locked_out_and_the_lockout_doubles_while_guessing_goes_on():
    clock = Clock()
    g = FailureGuard("PIN", per_source=5, per_target=1000, window=60, lockout=60, clock=clock)
    for _ in range(4):
        g.failed("203.0.113.9:5060", "room tinh")
    assert not g.refused("203.0.113.9", "room tinh")
    g.failed("203.0.113.9", "room tinh")
    assert g.retry_after("203.0.113.9", "room other") == 60       # locked out of every target
    assert not g.refused("203.0.113.10", "room tinh")             # another address is not
    clock.t += 61
    assert not g.refused("203.0.113.9", "room tinh")
    for _ in range(5):
        g.failed("203.0.113.9", "room tinh")
    assert g.retry_after("203.0.113.9", "room tinh") == 120       # again within the hour: doubled
    clock.t += 121 + 3600
    for _ in range(5):
        g.failed("203.0.113.9", "room tinh")
    assert g.retry_after("203.0.113.9", "room tinh") == 60        # a quiet hour: back to the start


def test_guesses_spread_over_addresses_lock_the_target_but_not_a_site_that_logged_in_before():
    clock = Clock()
    g = FailureGuard("password", per_source=10, per_target=20, window=300, clock=clock)
    g.succeeded("10.21.1.5", "account xa-vinh-phat")              # the commune's own device
    for i in range(20):
        g.failed(f"198.51.100.{i + 1}", "account xa-vinh-phat")
    assert g.refused("192.0.2.77", "account xa-vinh-phat")
    assert not g.refused("10.21.1.5", "account xa-vinh-phat"), "the attacker locked the site out"
    assert not g.refused("192.0.2.77", "account xa-my-cuong")
    [alarm] = g.alarms()
    assert alarm["kind"] == "target" and alarm["name"] == "account xa-vinh-phat"
    assert alarm["sources"] == 20 and alarm["locked"] and alarm["secret"] == "password"
    clock.t += 60 + 601
    assert g.alarms() == []                                        # ten minutes after the lockout


def test_ipv6_counts_per_64_and_loopback_is_no_single_source():
    assert source_key("[2001:db8:1:2::99]:5060") == "2001:db8:1:2::/64"
    assert source_key("::ffff:198.51.100.7") == "198.51.100.7"
    clock = Clock()
    g = FailureGuard("PIN", per_source=5, per_target=1000, clock=clock)
    for i in range(5):
        g.failed(f"2001:db8:1:2::{i + 1}", "room a")
    assert g.refused("2001:db8:1:2::abcd", "room a") and not g.refused("2001:db8:1:3::1", "room a")
    for _ in range(50):                  # a proxy on the machine itself relays everybody
        g.failed("127.0.0.1", "room b")
    assert not g.refused("127.0.0.1", "room b") and not g.refused("::1", "room b")


def test_memory_is_bounded():
    g = FailureGuard("PIN", per_source=5, per_target=5, max_keys=100, clock=Clock())
    for i in range(5000):
        g.failed(f"198.18.{i // 256}.{i % 256}", f"room {i}")
    assert len(g._keys) <= 100
