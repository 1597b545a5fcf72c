"""A tiny Dockerfile translator: turns an example's Dockerfile into a runnable "image".

The e2e tests run exactly what ``examples/*/Dockerfile`` says, so the examples
cannot rot.  This is not docker build; it knows the few instructions the
examples use and refuses anything else:

``FROM``        must be ``debian:bookworm`` or ``debian:bookworm-slim``: the base rootfs.
``RUN``         run with ``/bin/sh -c`` in a chroot of the image, with its ENV, except:
                * a RUN with ``apt-get install`` is *not* run: every package it names
                  must already be in the base rootfs (rootfs.BASE_PACKAGES), which is
                  checked with dpkg-query;
                * a RUN that pip-installs pyinit (the source the Dockerfile copied
                  to /usr/src/pyinit) installs the working tree with the deps the
                  base rootfs already holds, without a build from source in the chroot.
``COPY``        ``COPY SRC... DEST`` relative to the build context, the repository root
                (no flags).
``ENV``         ``ENV K=V ...`` or ``ENV K V``; ``$VAR``/``${VAR}`` are expanded.
``WORKDIR``     recorded (becomes the container's cwd) and created.
``USER``        recorded (the container's process.user).
``STOPSIGNAL``  recorded (what ``docker stop`` sends).
``ENTRYPOINT``, ``CMD``   JSON-array (exec) form only.
``EXPOSE``, ``VOLUME``, ``LABEL``   ignored.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import rootfs as rootfs_mod

_IGNORED = {"EXPOSE", "VOLUME", "LABEL"}
_ALLOWED_FROM = {"debian:bookworm", "debian:bookworm-slim"}
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and raw argument text."""

    keyword: str
    text: str


@dataclass
class Image:
    """What a container started from the image needs to know."""

    name: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {"PATH": rootfs_mod.CHROOT_PATH})
    workdir: str = "/"
    user: str = ""
    stopsignal: str = "SIGTERM"

    def argv(
        self, cmd: list[str] | None = None, pyinit_flags: list[str] | None = None
    ) -> list[str]:
        """process.args as docker builds them: ENTRYPOINT + (CMD, or CMD given at run time).

        PYINIT_FLAGS are inserted just before the entrypoint's ``--`` (after its own
        flags, so they win); that is the test's stand-in for a user editing the
        ENTRYPOINT line.
        """
        entry = list(self.entrypoint)
        if pyinit_flags:
            at = entry.index("--") if "--" in entry else len(entry)
            entry[at:at] = pyinit_flags
        return entry + list(self.cmd if cmd is None else cmd)

    def env_list(self, extra: dict[str, str] | None = None) -> list[str]:
        """process.env: the image's ENV, updated with EXTRA (``docker run -e``)."""
        merged = {**self.env, **(extra or {})}
        return [f"{k}={v}" for k, v in merged.items()]


def parse(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, ``\\`` continuations joined)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    if pending:
        raise ValueError("Dockerfile ends inside a line continuation")
    return instructions


def expand(value: str, env: dict[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` from ENV (unknown variables become empty)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse_env(text: str, env: dict[str, str]) -> dict[str, str]:
    """The variables one ENV instruction sets (``K=V ...`` or legacy ``K V``)."""
    words = shlex.split(text)
    if words and "=" not in words[0]:
        return {words[0]: expand(" ".join(words[1:]), env)}
    return {k: expand(v, env) for k, _, v in (w.partition("=") for w in words)}


def exec_form(keyword: str, text: str) -> list[str]:
    """The JSON-array form of ENTRYPOINT/CMD; the shell form is refused."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{keyword} must use the JSON-array form, got {text!r}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{keyword} must be a JSON array of strings, got {text!r}")
    return value


def apt_packages(command: str) -> list[str]:
    """The package names of every ``apt-get install`` in a RUN command."""
    packages: list[str] = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1 :]
            packages += [w for w in after if not w.startswith("-")]
    return packages


def is_pyinit_pip_install(command: str) -> bool:
    """True for a RUN that installs pyinit itself with pip."""
    return bool(re.search(r"\bpip3?\s+install\b", command)) and bool(
        re.search(r"(^|\s)(\S*/)?pyinit/?(\s|$|[=<>\[])", command)
    )


class Builder:
    """Applies a Dockerfile's instructions to a mounted rootfs, collecting an Image.

    ``install_pyinit`` is called with the rootfs whenever the Dockerfile pip-installs
    pyinit, so the working tree is what the image gets.
    """

    def __init__(
        self, dockerfile: Path, context: Path, rootfs: Path, install_pyinit: Callable[[Path], None]
    ) -> None:
        self.dockerfile = dockerfile
        self.context = context
        self.rootfs = rootfs
        self.install_pyinit = install_pyinit
        self.image = Image(name=dockerfile.parent.name)

    def build(self) -> Image:
        """Apply every instruction of the Dockerfile; return the resulting Image."""
        for ins in parse(self.dockerfile.read_text()):
            handler = getattr(self, f"do_{ins.keyword.lower()}", None)
            if handler is None and ins.keyword not in _IGNORED:
                raise ValueError(f"{self.dockerfile}: unsupported {ins.keyword}")
            if handler is not None:
                handler(ins.text)
        return self.image

    def do_from(self, text: str) -> None:
        """Check the base image is the Debian release the base rootfs was built from."""
        if text.split()[0] not in _ALLOWED_FROM:
            raise ValueError(f"FROM {text}: the e2e base rootfs is debian:bookworm")

    def do_run(self, text: str) -> None:
        """Run a shell command in the image (apt-get and pyinit installs: see module doc)."""
        if packages := apt_packages(text):
            self._check_installed(packages)
        elif is_pyinit_pip_install(text):
            self.install_pyinit(self.rootfs)
        else:
            env = {**rootfs_mod.chroot_env(), **self.image.env}
            rootfs_mod.chroot(self.rootfs, f"cd {shlex.quote(self.image.workdir)} && {text}", env)

    def _check_installed(self, packages: list[str]) -> None:
        query = "dpkg-query -W -f='${db:Status-Status} ${Package}\\n' " + " ".join(
            shlex.quote(p) for p in packages
        )
        out = rootfs_mod.chroot(self.rootfs, query).stdout.split("\n")
        installed = {line.split()[1] for line in out if line.startswith("installed ")}
        missing = sorted(set(packages) - installed)
        if missing:
            raise ValueError(
                f"{self.dockerfile} installs {missing}: add them to rootfs.BASE_PACKAGES"
            )

    def do_copy(self, text: str) -> None:
        """Copy files from the build context into the image (mode bits kept)."""
        *sources, dest = shlex.split(text)
        if any(s.startswith("--") for s in sources):
            raise ValueError(f"COPY {text}: flags are not supported")
        target = self.rootfs / expand(dest, self.image.env).lstrip("/")
        for source in sources:
            src = self.context / source
            into = target / src.name if dest.endswith("/") or len(sources) > 1 else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, into, dirs_exist_ok=True)
            else:
                shutil.copy2(src, into)

    def do_env(self, text: str) -> None:
        """Record environment variables (they reach later RUNs and the container)."""
        self.image.env.update(parse_env(text, self.image.env))

    def do_workdir(self, text: str) -> None:
        """Record and create the working directory."""
        self.image.workdir = expand(text.strip(), self.image.env)
        (self.rootfs / self.image.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def do_user(self, text: str) -> None:
        """Record the user the container process starts as."""
        self.image.user = text.strip()

    def do_stopsignal(self, text: str) -> None:
        """Record the signal ``docker stop`` would send."""
        self.image.stopsignal = text.strip()

    def do_entrypoint(self, text: str) -> None:
        """Record ENTRYPOINT; like docker, a new ENTRYPOINT resets CMD."""
        self.image.entrypoint = exec_form("ENTRYPOINT", text)
        self.image.cmd = []

    def do_cmd(self, text: str) -> None:
        """Record CMD."""
        self.image.cmd = exec_form("CMD", text)
