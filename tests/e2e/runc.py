"""runc bundles and containers for the e2e tests, every wait bounded.

``write_bundle`` starts from ``runc spec`` and makes it look like what docker
would run: the image's argv, env and cwd, docker's default capabilities, a
read-write root, a ``/data`` bind mount.  ``Container`` runs ``runc run`` in the
background (its exit status is PID 1's), talks to it with ``runc exec`` and
``runc kill``, and ``delete`` always cleans up.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# What docker gives a container by default (moby's oci/caps/defaults.go).
DOCKER_CAPS = [
    f"CAP_{name}"
    for name in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
]


@dataclass
class Mount:
    """A bind mount from the host into the container."""

    source: Path
    destination: str
    readonly: bool = False


@dataclass
class BundleSpec:
    """What differs between the test containers."""

    rootfs: Path
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    mounts: list[Mount] = field(default_factory=list)
    drop_caps: list[str] = field(default_factory=list)
    host_network: bool = False


def _capabilities(spec: BundleSpec) -> dict[str, list[str]]:
    caps = [c for c in DOCKER_CAPS if c not in spec.drop_caps]
    # Like docker: a non-root user keeps the bounding set only.
    running = caps if spec.uid == 0 else []
    return {"bounding": caps, "effective": running, "permitted": running}


def write_bundle(bundle: Path, spec: BundleSpec) -> Path:
    """Write BUNDLE/config.json for SPEC (starting from ``runc spec``); return the bundle."""
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, timeout=30)
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    process = config["process"]
    process.update(
        args=spec.args,
        env=spec.env,
        cwd=spec.cwd,
        terminal=False,
        noNewPrivileges=False,
        capabilities=_capabilities(spec),
        user={"uid": spec.uid, "gid": spec.gid},
    )
    config["root"] = {"path": str(spec.rootfs.resolve()), "readonly": False}
    config["hostname"] = "e2e"
    config["mounts"] += [
        {
            "destination": m.destination,
            "type": "bind",
            "source": str(m.source.resolve()),
            "options": ["rbind", "ro" if m.readonly else "rw"],
        }
        for m in spec.mounts
    ]
    if spec.host_network:
        config["linux"]["namespaces"] = [
            ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"
        ]
    path.write_text(json.dumps(config, indent=2))
    return bundle


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll PREDICATE until it is true; fail the test naming WHAT after TIMEOUT seconds.

    DETAILS (e.g. ``Container.logs``) is called for the failure message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    extra = f"\n{details()}" if details else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


class Container:
    """One ``runc run`` in the background, with its stdout/stderr captured to files."""

    def __init__(self, state_root: Path, bundle: Path, cid: str) -> None:
        self.state_root = state_root
        self.bundle = bundle
        self.id = cid
        self.proc: subprocess.Popen[bytes] | None = None
        self.background: list[subprocess.Popen[bytes]] = []
        self.stdout_path = bundle / "stdout.log"
        self.stderr_path = bundle / "stderr.log"

    def runc(
        self, *args: str, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``runc --root STATE ARGS`` and return its result (text)."""
        argv = ["runc", "--root", str(self.state_root), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)

    def start(self) -> Container:
        """Start ``runc run`` (not detached: its exit status will be PID 1's)."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    "runc",
                    "--root",
                    str(self.state_root),
                    "run",
                    "--bundle",
                    str(self.bundle),
                    self.id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self

    @property
    def stdout(self) -> str:
        """Everything the container wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        """Everything the container (and runc) wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> str:
        """stdout and stderr, for assertion messages."""
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def status(self) -> str:
        """runc's view of the container: created, running, stopped, or '' if unknown."""
        proc = self.runc("state", self.id, check=False)
        return json.loads(proc.stdout)["status"] if proc.returncode == 0 else ""

    def exec(
        self,
        *args: str,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        user: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``runc exec`` ARGS in the container (as its process.user unless USER)."""
        options = [f"--env={k}={v}" for k, v in (env or {}).items()]
        if user is not None:
            options.append(f"--user={user}")
        proc = self.runc("exec", *options, self.id, *args, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"runc exec {args} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\n{self.logs()}"
            )
        return proc

    def exec_background(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``runc exec`` ARGS without waiting; it is killed in ``delete``."""
        out = open(log or self.bundle / f"exec-{len(self.background)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["runc", "--root", str(self.state_root), "exec", self.id, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.background.append(proc)
        return proc

    def kill(self, signal: str) -> None:
        """Send SIGNAL (e.g. TERM, INT) to the container's PID 1, as docker stop/kill do."""
        self.runc("kill", self.id, signal.removeprefix("SIG"))

    def wait(self, timeout: float = 30) -> int:
        """Wait for ``runc run`` to return; its exit code is PID 1's (128+N if signalled)."""
        assert self.proc is not None, "container was not started"
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"container {self.id} still running after {timeout}s\n{self.logs()}"
            ) from None

    def wait_running(self, timeout: float = 30) -> None:
        """Wait until runc reports the container running (its process has started)."""

        def running() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"container exited early with {self.proc.returncode}\n{self.logs()}"
                )
            return self.status() == "running"

        wait_for(running, timeout, f"container {self.id} to run")

    def delete(self) -> None:
        """Force-delete the container and reap every host process started for it."""
        self.runc("delete", "-f", self.id, check=False)
        for proc in [*self.background, *([self.proc] if self.proc else [])]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
