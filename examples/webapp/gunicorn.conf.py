"""gunicorn settings; the hooks record the main's start and stop in /data/events.log."""

import os
import time

bind = "0.0.0.0:8000"
workers = 2
umask = 0o007
accesslog = "-"


def record(event):
    """Append 'EVENT TIME PID UID' to the shared events log."""
    line = f"{event} {time.time():.6f} {os.getpid()} {os.getuid()}\n"
    with open("/data/events.log", "a") as log:
        log.write(line)


def on_starting(server):
    """The gunicorn arbiter starts (after the migrate task, if pyinit kept its order)."""
    record("main-start")


def on_exit(server):
    """The arbiter is about to exit (after pyinit forwarded the stop signal)."""
    record("main-stop")
