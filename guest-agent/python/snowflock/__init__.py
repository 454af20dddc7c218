"""Fork this snowflock VM from Python: ctypes over libsf.so.1.

    import snowflock

    t = snowflock.request_ticket(4)
    me = snowflock.clone(t)
    if me:                               # in clone `me` (1..t.granted)
        snowflock.exit(do_my_share(me))  # does not return
    for s in snowflock.join(t):          # in the parent
        print(s.id, s.how_name, s.status)

Every function raises snowflock.Error (an OSError: .errno, .strerror from
libsf's sf_last_error()) on failure.  See sf.h and docs/guest-api.md.
The library is found as SF_LIBSF (a path, for tests) or libsf.so.1.
"""

import ctypes
import os
from collections import namedtuple

__all__ = [
    "Error", "Ticket", "Status", "request_ticket", "clone", "exit",
    "exit_wait", "join", "kill", "checkpoint_parent", "create_clones", "id",
    "generation", "EXITED", "SIGNALED", "LOST", "KILLED", "CRASHED",
]

EXITED, SIGNALED, LOST, KILLED, CRASHED = range(5)
HOW_NAMES = ("exited", "signaled", "lost", "killed", "crashed")


class Error(OSError):
    """A libsf call failed: errno is one of the API's errors (EDQUOT, ...)."""


class Status(namedtuple("Status", "id how status")):
    """How clone `id` ended: how is EXITED..CRASHED, status its code/signal."""

    @property
    def how_name(self):
        return HOW_NAMES[self.how] if 0 <= self.how < len(HOW_NAMES) else "?"


class _CStatus(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("how", ctypes.c_int),
                ("status", ctypes.c_int)]


_lib = None


def _libsf():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(os.environ.get("SF_LIBSF") or "libsf.so.1",
                          use_errno=True)
        i64, i32 = ctypes.c_int64, ctypes.c_int
        for name, res, args in (
            ("sf_request_ticket", i64, [i32, ctypes.c_uint]),
            ("sf_ticket_granted", i32, [i64]),
            ("sf_clone", i32, [i64]),
            ("sf_clone_flags", i32, [i64, ctypes.c_uint]),
            ("sf_exit", i32, [i32]),
            ("sf_exit_wait", i32, [i32]),
            ("sf_join", i32, [i64, ctypes.POINTER(_CStatus), i32]),
            ("sf_kill", i32, [i64]),
            ("sf_checkpoint_parent", i32, [ctypes.POINTER(i64)]),
            ("sf_create_clones", i32, [i64, i64]),
            ("sf_id", i32, []),
            ("sf_generation", i32, []),
            ("sf_last_error", ctypes.c_char_p, []),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


def _check(ret):
    if ret < 0:
        err = ctypes.get_errno()
        msg = _libsf().sf_last_error().decode(errors="replace")
        raise Error(err, msg or os.strerror(err))
    return ret


class Ticket:
    """Permission for `granted` clones (the host may grant fewer than asked)."""

    def __init__(self, ticket, granted):
        self.id = ticket
        self.granted = granted

    def __int__(self):
        return self.id

    __index__ = __int__

    def __repr__(self):
        return "Ticket(%d, granted=%d)" % (self.id, self.granted)


def _tid(ticket):
    return ticket.id if isinstance(ticket, Ticket) else int(ticket)


def request_ticket(n, flags=0):
    """Ask for n clones; returns a Ticket (.granted <= n)."""
    lib = _libsf()
    t = _check(lib.sf_request_ticket(n, flags))
    return Ticket(t, _check(lib.sf_ticket_granted(t)))


def clone(ticket, freeze=False):
    """Fork the VM: 0 in the parent, the clone id (1..granted) in a clone.

    freeze=True freezes the workload cgroup (which this program must be
    in) around the fork; a clone's workload runs only once its identity
    (RNG, clock, network) is in place (sf_clone_flags, SF_CLONE_FREEZE)."""
    return _check(_libsf().sf_clone_flags(_tid(ticket), 1 if freeze else 0))


def exit(status=0):
    """End this clone with an exit status; does not return on success."""
    _check(_libsf().sf_exit(status))


def exit_wait(wstatus):
    """Like exit(), from an os.waitpid() status."""
    _check(_libsf().sf_exit_wait(wstatus))


def join(ticket):
    """Wait until every clone of the ticket ended; list of Status by id."""
    lib = _libsf()
    tid = _tid(ticket)
    if isinstance(ticket, Ticket):
        max_ = ticket.granted
    else:
        max_ = _check(lib.sf_ticket_granted(tid))
    buf = (_CStatus * max(max_, 1))()
    n = _check(lib.sf_join(tid, buf, max_))
    return [Status(s.id, s.how, s.status) for s in buf[:n]]


def kill(ticket):
    """Stop the ticket's live clones; returns how many were stopped."""
    return _check(_libsf().sf_kill(_tid(ticket)))


def checkpoint_parent():
    """Freeze a fork point.  Returns (0, checkpoint) in the parent and
    (clone id, 0) in a clone later made from it by create_clones()."""
    cp = ctypes.c_int64(0)
    me = _check(_libsf().sf_checkpoint_parent(ctypes.byref(cp)))
    return me, cp.value


def create_clones(checkpoint, ticket):
    """Launch the ticket's clones from a checkpoint; returns how many."""
    return _check(_libsf().sf_create_clones(int(checkpoint), _tid(ticket)))


def id():
    """This VM's clone id, 0 when it is not a clone."""
    return _check(_libsf().sf_id())


def generation():
    """The fork number that made this clone, 0 when it is not a clone."""
    return _check(_libsf().sf_generation())
