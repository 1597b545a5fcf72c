"""The sidecar: a Prometheus-style /metrics on 127.0.0.1:9121 from `redis-cli info`."""

import http.server
import subprocess


def metrics():
    """redis' numeric INFO fields as `redis_NAME VALUE` lines, plus redis_up."""
    proc = subprocess.run(
        ["redis-cli", "info"], capture_output=True, text=True, timeout=2, check=False
    )
    up = proc.returncode == 0 and proc.stdout.startswith("#")
    lines = [f"redis_up {int(up)}"]
    for row in proc.stdout.splitlines() if up else ():
        name, _, value = row.partition(":")
        try:
            lines.append(f"redis_{name} {float(value):g}")
        except ValueError:
            pass
    return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /metrics answers the metrics; anything else 404."""

    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = metrics().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.HTTPServer(("127.0.0.1", 9121), Handler)
print("listening on 127.0.0.1:9121", flush=True)
server.serve_forever()
