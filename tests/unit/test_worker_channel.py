"""The control-to-worker channel: descriptors the kernel cuts off are reported, never
silently missing."""

from __future__ import annotations

import asyncio
import os
import resource
import socket

from medlb.workers.channel import Channel


def lowest_free_descriptor() -> int:
    """The number this process's next descriptor would get: with the limit there, none."""
    fd = 0
    while True:
        try:
            os.fstat(fd)
        except OSError:
            return fd
        fd += 1


def test_sockets_a_receiver_at_its_descriptor_limit_cannot_take_are_reported_as_lost():
    async def scenario() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sender, receiver = Channel(ours), Channel(theirs)
        first, second = socket.socket(), socket.socket()
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_descriptor(), hard))
            try:
                await sender.send({"type": "prepare", "n": 1}, [first.fileno()])
                lost = await receiver.receive()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await sender.send({"type": "prepare", "n": 2}, [second.fileno()])
            message, fds = await receiver.receive()

            assert lost[0]["n"] == 1 and lost[1] is None
            assert message["n"] == 2 and fds is not None and len(fds) == 1, "the next message gets its own socket"
            assert os.fstat(fds[0]).st_ino == os.fstat(second.fileno()).st_ino
            os.close(fds[0])
        finally:
            sender.close()
            receiver.close()
            first.close()
            second.close()

    asyncio.run(scenario())
