"""The sidecar: take pending jobs from sqlite, mark them done, write /data/done/ID."""

import os
import signal
import sqlite3
import sys
import time

os.umask(0o007)
running = True


def record(event):
    """Append 'EVENT TIME PID UID' to the shared events log."""
    with open("/data/events.log", "a") as log:
        log.write(f"{event} {time.time():.6f} {os.getpid()} {os.getuid()}\n")


def stop(signum, frame):
    """SIGTERM from pyinit: finish the current job, then leave the loop."""
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
os.makedirs("/data/done", exist_ok=True)
record("worker-start")
print("waiting for jobs", flush=True)
while running:
    with sqlite3.connect("/data/app.db", timeout=5) as db:
        rows = db.execute("SELECT id FROM jobs WHERE state = 'pending'").fetchall()
        for (job,) in rows:
            with open(f"/data/done/{job}", "w") as out:
                out.write(f"done by uid {os.getuid()}\n")
            db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", (job,))
            print(f"job {job} done", flush=True)
    time.sleep(0.2)
record("worker-stop")
print("stopped", flush=True)
sys.exit(0)
