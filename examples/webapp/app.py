"""The main: a tiny WSGI app. POST /jobs queues a job, GET / counts jobs by state."""

import json
import sqlite3

DB = "/data/app.db"


def application(environ, start_response):
    """Queue a job on POST /jobs; answer the job counts as JSON on anything else."""
    with sqlite3.connect(DB, timeout=5) as db:
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/jobs":
            db.execute("INSERT INTO jobs (state) VALUES ('pending')")
        counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    body = json.dumps(counts).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
