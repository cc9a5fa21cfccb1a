"""Objects whose locks and workspaces a forked child re-creates.

fork() copies a lock held by another thread as held for ever (that thread does not exist in
the child), and a workspace's C++ mutex likewise. Layers and models register here; in the
child each one's `_after_fork()` replaces its locks and scratch with new, free ones (the
weights and optimizer state are kept).
"""
import os
import weakref

_live = weakref.WeakSet()


def register(obj):
    _live.add(obj)


def _after_fork_in_child():
    for obj in list(_live):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
