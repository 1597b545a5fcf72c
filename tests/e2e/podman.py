"""podman, confined to the test's own directories, and the containers it runs.

:class:`Podman` writes its own ``containers.conf``, ``storage.conf`` and
``registries.conf`` and points podman at them (``CONTAINERS_CONF``,
``CONTAINERS_STORAGE_CONF``, ``CONTAINERS_REGISTRIES_CONF``, ``XDG_RUNTIME_DIR``):
nothing is read from or written to ``/etc/containers`` or ``/var/lib/containers``.
What this machine needs, and why (docs/containers.md says the same):

* ``default_ulimits = nofile=1024:1024, nproc=4096:4096``: podman's defaults
  (nofile 1048576, nproc = the host's) are above the hard limits here, and
  without CAP_SYS_RESOURCE in the host's namespace runc cannot set them;
* ``cgroup_manager = "cgroupfs"``, ``events_logger = "file"``: what podman falls
  back to without systemd anyway, set so the host's setup does not matter;
* containers run with ``--network none``; builds use the host's network, the
  only way the Dockerfiles' apt-get and pip reach their mirrors here.

The runtime is runc (crun is not installed; podman picks runc by itself).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .rootfs import host_ca_bundle, log

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{run}/events.log"
tmp_dir = "{run}/libpod"
image_copy_tmp_dir = "{tmp}"

[network]
network_config_dir = "{run}/networks"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{graphroot}"
runroot = "{run}/storage"
"""

# pip inside a build trusts the host's CA bundle (it may hold a proxy's CA that
# a fresh image lacks); mounted for RUN steps only, never part of the image.
PIP_CONF = "[global]\ncert = /run/host-ca/ca.crt\n"


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll PREDICATE until it is true; fail naming WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    extra = f"\n{details()}" if details else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


class Podman:
    """One private podman installation: configuration in RUN, images in GRAPHROOT."""

    def __init__(self, run: Path, graphroot: Path) -> None:
        self.run_dir = run
        for sub in ("xdg", "libpod", "networks", "tmp", "build"):
            (run / sub).mkdir(parents=True, exist_ok=True)
        (run / "xdg").chmod(0o700)
        graphroot.mkdir(parents=True, exist_ok=True)
        values = {"run": run, "tmp": run / "tmp", "graphroot": graphroot}
        files = {
            "containers.conf": CONTAINERS_CONF,
            "storage.conf": STORAGE_CONF,
            "registries.conf": "unqualified-search-registries = []\n",
        }
        for name, text in files.items():
            (run / name).write_text(text.format(**values))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(run),
            "CONTAINERS_CONF": str(run / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(run / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(run / "registries.conf"),
            "XDG_RUNTIME_DIR": str(run / "xdg"),
            "TMPDIR": str(run / "tmp"),
        }
        self.build_mounts = self._build_mounts()

    def _build_mounts(self) -> list[str]:
        bundle = host_ca_bundle()
        if bundle is None:
            return []
        ca = self.run_dir / "build" / "ca"
        pip = self.run_dir / "build" / "pip"
        ca.mkdir(exist_ok=True)
        pip.mkdir(exist_ok=True)
        shutil.copyfile(bundle, ca / "ca.crt")
        (pip / "pip.conf").write_text(PIP_CONF)
        return ["-v", f"{ca}:/run/host-ca:ro", "-v", f"{pip}:/etc/xdg/pip:ro"]

    def __call__(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``; raise with its output when CHECK and it fails."""
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def has_image(self, name: str) -> bool:
        """True when NAME is in this installation's storage."""
        return self("image", "exists", name, check=False).returncode == 0

    def build(self, dockerfile: Path, context: Path, tag: str, base: str) -> float:
        """``podman build --from BASE -f DOCKERFILE CONTEXT``; return the seconds it took.

        ``--format docker``: podman's default OCI image format has no HEALTHCHECK (podman
        drops it with a warning); the examples are Docker images and keep theirs.
        """
        started = time.monotonic()
        self(
            "build",
            "--format=docker",
            "--pull=never",
            "--network=host",
            "--layers",
            f"--from={base}",
            *self.build_mounts,
            "-f",
            str(dockerfile),
            "-t",
            tag,
            str(context),
            timeout=600,
        )
        seconds = time.monotonic() - started
        log(f"podman build {tag} took {seconds:.1f}s")
        return seconds

    def remove_all_containers(self) -> None:
        """Force-remove every container of this installation (teardown)."""
        self("rm", "--all", "--force", "--time=0", check=False, timeout=120)


class Container:
    """A container started with ``podman run -d``; every call bounded."""

    def __init__(self, podman: Podman, name: str) -> None:
        self.podman = podman
        self.name = name

    def logs(self) -> str:
        """``podman logs`` (stdout and stderr), for assertion messages."""
        proc = self.podman("logs", self.name, check=False)
        return f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"

    @property
    def stdout(self) -> str:
        """What the container wrote to stdout so far."""
        return self.podman("logs", self.name, check=False).stdout

    @property
    def stderr(self) -> str:
        """What the container wrote to stderr so far."""
        return self.podman("logs", self.name, check=False).stderr

    def inspect(self, template: str) -> str:
        """``podman inspect --format TEMPLATE``."""
        return self.podman("inspect", "--format", template, self.name).stdout.strip()

    def state(self) -> dict[str, object]:
        """The container's State object from ``podman inspect``."""
        state: dict[str, object] = json.loads(self.inspect("{{json .State}}"))
        return state

    def running(self) -> bool:
        """True while PID 1 runs."""
        return self.state().get("Status") == "running"

    def exit_code(self) -> int:
        """``podman inspect``'s ExitCode (PID 1's status, 128+N if signal N killed it)."""
        return int(self.inspect("{{.State.ExitCode}}"))

    def exec(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        check: bool = True,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """``podman exec`` ARGS in the container."""
        options = [f"--env={k}={v}" for k, v in (env or {}).items()]
        if user is not None:
            options.append(f"--user={user}")
        proc = self.podman("exec", *options, self.name, *args, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman exec {args} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\n{self.logs()}"
            )
        return proc

    def exec_detached(self, *args: str) -> None:
        """``podman exec -d`` ARGS: start it and do not wait."""
        self.podman("exec", "-d", self.name, *args)

    def kill(self, signal: str) -> None:
        """``podman kill -s SIGNAL``: the signal goes to PID 1."""
        self.podman("kill", "-s", signal.removeprefix("SIG"), self.name)

    def stop(self, timeout: int = 10) -> None:
        """``podman stop``: the image's STOPSIGNAL, SIGKILL after TIMEOUT seconds."""
        self.podman("stop", "--time", str(timeout), self.name, timeout=timeout + 60)

    def start(self) -> None:
        """``podman start`` the stopped container again (same writable layer, same volumes)."""
        self.podman("start", self.name)

    def wait(self, timeout: float = 30) -> int:
        """Wait until PID 1 has exited; return its exit code."""
        wait_for(lambda: not self.running(), timeout, f"{self.name} to exit", details=self.logs)
        return self.exit_code()

    def wait_running(self, timeout: float = 30) -> None:
        """Fail at once if the container already exited, else wait until it runs."""

        def up() -> bool:
            state = self.state()
            if state.get("Status") == "exited":
                raise AssertionError(
                    f"{self.name} exited early with {state.get('ExitCode')}\n{self.logs()}"
                )
            return state.get("Status") == "running"

        wait_for(up, timeout, f"{self.name} to run", details=self.logs)
