"""Pure parts of the console's sign-in throttle (issue 17, findings 4 and 5): the backoff rules, how clients are
keyed, and the slots that bound concurrent argon2 checks. Its Postgres side is in
tests/integration/test_console_hostile.py."""

from __future__ import annotations

import asyncio

import pytest

from streams.console.throttle import (
    ADDRESS,
    PAIR,
    USERNAME,
    HashSlots,
    Rule,
    SignInBusy,
    client_key,
    slots_for_memory,
)


@pytest.mark.attack("brute_force")
def test_delays_grow_exponentially_up_to_a_cap() -> None:
    rule = Rule("pair", free=3, base_s=2, cap_s=60, forget_s=900)
    assert [rule.delay(n) for n in range(1, 10)] == [0, 0, 2, 4, 8, 16, 32, 60, 60]
    assert rule.delay(10**6) == 60


@pytest.mark.attack("brute_force")
def test_no_rule_on_a_username_locks_it_for_long() -> None:
    """A third party can slow a manager's sign-in down for a minute at most, never lock it (finding 5); the one
    address it guesses from waits longer."""
    assert PAIR.cap_s <= 60 and USERNAME.cap_s <= 60 and ADDRESS.cap_s >= USERNAME.cap_s
    assert PAIR.free >= 3 and USERNAME.free > PAIR.free
    assert all(r.forget_s > r.cap_s for r in (PAIR, ADDRESS, USERNAME))


@pytest.mark.attack("brute_force")
def test_clients_are_keyed_by_address_and_ipv6_clients_by_their_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7" != client_key("192.0.2.8")
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key(None) == client_key("") == "unknown" and client_key("testclient") == "testclient"


def test_slots_are_sized_to_memory() -> None:
    assert slots_for_memory(256, per_check_mib=64) == 4
    assert slots_for_memory(100, per_check_mib=64) == 1 and slots_for_memory(1, per_check_mib=64) == 1


@pytest.mark.attack("brute_force")
def test_hash_slots_bound_concurrent_checks() -> None:
    slots, running, peak = HashSlots(2, wait_s=5, max_waiting=20), [0], [0]

    async def check() -> None:
        async with slots.slot():
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.01)
            running[0] -= 1

    async def main() -> None:
        await asyncio.gather(*(check() for _ in range(12)))

    asyncio.run(main())
    assert peak[0] == 2


@pytest.mark.attack("brute_force")
def test_a_sign_in_waits_briefly_for_a_slot_then_is_busy() -> None:
    async def main() -> None:
        slots = HashSlots(1, wait_s=0.05, max_waiting=1)
        async with slots.slot():
            with pytest.raises(SignInBusy):  # waited 0.05 s
                async with slots.slot():
                    pass
            waiting = asyncio.create_task(_hold(slots))
            await asyncio.sleep(0.01)
            with pytest.raises(SignInBusy):  # the queue is full: refused at once
                async with slots.slot():
                    pass
            waiting.cancel()

    asyncio.run(main())


async def _hold(slots: HashSlots) -> None:
    async with slots.slot():
        await asyncio.sleep(1)
