"""pyinit: a container init written in Python.

Root setup, a gosu-compatible step-down to the service user, then either exec
(the target keeps the PID) or supervise (pyinit stays PID 1, forwards signals,
reaps zombies).  The exec path never imports trio: start-up time is a feature.
"""

__version__ = "0.1.0"
