"""pyinit: a container init written in Python.

Root setup, a gosu-compatible step-down to the service user, then either exec
(the target keeps the PID) or supervise (pyinit stays PID 1, forwards signals,
reaps zombies).  The exec path never imports trio: start-up time is a feature.
"""

__version__ = "0.1.0"

#: Where PID 1 listens for pyinitctl unless --control says otherwise (docs/operate.md):
#: here, where both the planner and the lean pyinitctl read it.
DEFAULT_CONTROL = "/run/pyinit/control.sock"
