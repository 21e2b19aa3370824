"""The listening socket while the server stops: new handshakes refused (a classic BPF filter, Linux), the
connections already in its backlog taken before it closes, so that none is reset."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import sys
from collections.abc import Sequence

#: ``setsockopt`` option of a classic BPF socket filter (``<asm-generic/socket.h>``; Python has no name for it).
SO_ATTACH_FILTER = 26
SYN, ACK = 0x02, 0x10
#: A socket filter dropping every segment that opens a handshake (SYN without ACK) and keeping every other.
#: A TCP socket's filter sees the segment from its TCP header, whose byte 13 holds the flags. The listener runs
#: it on SYNs and on the ACK that completes a handshake: dropping every segment would also drop the ACKs of
#: handshakes under way, whose clients, connected as far as they know, would then be reset.
REFUSE_NEW_HANDSHAKES = (
    (0x30, 0, 0, 13),  # BPF_LD | BPF_B | BPF_ABS: A = flags
    (0x54, 0, 0, SYN | ACK),  # BPF_ALU | BPF_AND | BPF_K
    (0x15, 0, 1, SYN),  # BPF_JMP | BPF_JEQ | BPF_K: a SYN alone goes on, any other segment skips one
    (0x06, 0, 0, 0),  # BPF_RET | BPF_K: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET | BPF_K: keep, whole
)

logger = logging.getLogger("stevedore.process")


def copy_of(listener: socket.socket) -> socket.socket:
    """A socket of its own on a listener of the loop's (which closes its own): it keeps the listener open."""
    return socket.socket(fileno=os.dup(listener.fileno()))


def refuse_new_handshakes(listeners: Sequence[socket.socket]) -> None:
    """Attach ``REFUSE_NEW_HANDSHAKES`` to each listener: a client's SYN goes unanswered until the socket closes,
    then is refused. Linux only; elsewhere clients that come during the close may be reset."""
    if not sys.platform.startswith("linux"):
        return
    instructions = [SocketFilter(*instruction) for instruction in REFUSE_NEW_HANDSHAKES]
    program = (SocketFilter * len(instructions))(*instructions)  # referenced by the option, alive until set
    option = bytes(SocketFilterProgram(len(instructions), program))
    for listener in listeners:
        try:
            listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, option)
        except OSError as error:
            logger.warning("new connections may be reset while the server stops: no socket filter: %s", error)


def take_backlog(listener: socket.socket) -> list[socket.socket]:
    """Accept every connection waiting in ``listener``'s backlog, without blocking."""
    listener.setblocking(False)
    taken: list[socket.socket] = []
    while True:
        try:
            connection, _ = listener.accept()
        except ConnectionAbortedError:  # reset by its client while it waited
            continue
        except BlockingIOError:
            return taken
        except OSError as error:  # out of file descriptors: what is left waiting is reset
            logger.error("could not take every connection waiting in the backlog: %s", error)
            return taken
        connection.setblocking(False)
        taken.append(connection)


class SocketFilter(ctypes.Structure):
    """One classic BPF instruction: ``struct sock_filter``."""

    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SocketFilterProgram(ctypes.Structure):
    """``struct sock_fprog``: the instructions' count and address."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SocketFilter))]
