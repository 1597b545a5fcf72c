"""The task: create the schema (idempotent), record that it ran, exit 0."""

import os
import sqlite3
import time

os.umask(0o007)
with sqlite3.connect("/data/app.db") as db:
    db.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL)")
# sqlite creates files 0644 whatever the umask: the worker (group app) writes too.
os.chmod("/data/app.db", 0o660)
with open("/data/events.log", "a") as log:
    log.write(f"migrate {time.time():.6f} {os.getpid()} {os.getuid()}\n")
print("schema ready", flush=True)
