"""Which check failures are medlb's own (its host ran out of something), and how often
a recurring one reaches the log."""

import errno
import socket

import pytest

from medlb.health.base import local_error
from medlb.logs import Throttle


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_out_of_descriptors_buffers_or_memory_is_a_local_error(code):
    assert local_error(OSError(code, "no")) == errno.errorcode[code]


@pytest.mark.parametrize("exc", [ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
                                 OSError(errno.EHOSTUNREACH, "no route"), TimeoutError(),
                                 socket.gaierror(socket.EAI_NONAME, "unknown host")],
                         ids=["refused", "unreachable", "timeout", "unknown-host"])
def test_what_the_server_or_network_did_is_not_a_local_error(exc):
    assert local_error(exc) is None


def test_a_name_lookup_that_failed_with_a_system_error_is_a_local_error():
    assert local_error(socket.gaierror(socket.EAI_SYSTEM, "system error")) == "EAI_SYSTEM"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_throttled_line_says_how_many_occurrences_it_stands_for():
    clock = Clock()
    throttle = Throttle(10.0, clock)

    first = throttle.hit()
    quiet = [throttle.hit() for _ in range(4)]
    clock.now += 9.9
    still_quiet = throttle.hit()
    clock.now += 0.1
    next_line = throttle.hit()

    assert first == 1
    assert quiet == [0, 0, 0, 0] and still_quiet == 0
    assert next_line == 6  # the five held back and this one
