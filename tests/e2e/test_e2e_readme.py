"""The README's set-up, verbatim, on a pristine Debian 12: a README that drifts fails CI.

The newcomer's machine is an mmdebstrap ``minbase`` bookworm with python3,
python3-pip and git, nothing else (cached outside CI, see :mod:`rootfs`).  A
writable overlay of it becomes the root of a private mount and PID namespace
through ``pivot_root`` (a chroot would break the ``unshare`` pyinit's tests and
apt's sandbox use); it shares this machine's network, so apt and pip reach
their mirrors.  The checkout is copied where the README says to clone it, and
the README's install command, taken from README.md, is run there as root.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from . import rootfs

pytestmark = pytest.mark.timeout(900)

NEWCOMER_PACKAGES = ("python3", "python3-pip", "git")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Left out of the copy: what a fresh clone does not have.
NOT_CLONED = (".git", "__pycache__", "*.egg-info", ".*_cache", "build", "dist")

# Runs in the new namespaces: mount the overlay ($1: its options) on $2, make it
# the root, run the rest ($3...) there.  /.oldroot is detached: no host file shows.
PIVOT = """set -e
root=$2
mount -t overlay overlay -o "$1" "$root"
shift 2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mkdir -p "$root/.oldroot"
cd "$root"
pivot_root . .oldroot
exec /usr/sbin/chroot . /bin/sh -c 'umount -l /.oldroot && rmdir /.oldroot && exec "$@"' sh "$@"
"""


def setup_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the README's "Set-up" section, in order."""
    section = re.search(r"^## Set-up.*?$(.*?)^## ", readme, re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    return [b.strip() for b in re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)]


def readme_commands() -> tuple[str, str, str]:
    """(clone folder, install command, test command) as README.md says them."""
    blocks = setup_blocks((rootfs.REPO_ROOT / "README.md").read_text())
    assert len(blocks) == 3, f"expected clone, install and test blocks, got {blocks}"
    clone, install, test = blocks
    words = shlex.split(clone.split("&&")[0])
    assert words[:2] == ["git", "clone"], clone
    return words[-1], install, test


def copy_checkout(into: Path) -> None:
    """The working tree as a fresh clone would have it (mode bits of a root clone)."""
    shutil.copytree(rootfs.REPO_ROOT, into, ignore=shutil.ignore_patterns(*NOT_CLONED))
    into.chmod(0o755)


def run_as_newcomer(
    overlay: str, root: Path, script: str, cwd: str
) -> subprocess.CompletedProcess[str]:
    """``sh -c SCRIPT`` as root of the overlay on ROOT, in CWD, with a login-like environment."""
    env = ["env", "-i", f"PATH={CHROOT_PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]
    inner = f"cd {shlex.quote(cwd)} && {script}"
    argv = ["unshare", "--mount", "--propagation=private", "--pid", "--fork", "sh", "-c", PIVOT]
    argv += ["sh", overlay, str(root), *env, "sh", "-c", inner]
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=850, check=False
    )


@pytest.mark.e2e
def test_readme_install_command_on_pristine_debian(tmp_path: Path) -> None:
    """Clone folder, install command, then ``pyinit --user nobody -- id`` as the README says."""
    clone_dir, install, test = readme_commands()
    assert test == "bash .ci/run"
    pristine = rootfs.build("newcomer", NEWCOMER_PACKAGES, tmp_path, tarball=False)

    upper, work, merged = (tmp_path / n for n in ("upper", "work", "merged"))
    for path in (upper, work, merged):
        path.mkdir()
    # What the newcomer's machine has that a chroot does not: a resolver, and
    # this machine's CA bundle (it may hold a TLS proxy's CA), for pip.
    (upper / "etc").mkdir()
    shutil.copy2("/etc/resolv.conf", upper / "etc/resolv.conf")
    ca = rootfs.host_ca_bundle()
    if ca is not None:
        shutil.copy2(ca, upper / "etc/host-ca.crt")
        (upper / "etc/pip.conf").write_text("[global]\ncert = /etc/host-ca.crt\n")
    copy_checkout(upper / clone_dir.lstrip("/"))
    checks = (
        f"{install}; echo install-exit=$?;"
        " pyinit --user nobody -- id; echo again-exit=$?;"
        " /usr/bin/python3 -c 'import trio' 2>/dev/null; echo system-trio=$?"
    )
    overlay = f"lowerdir={pristine},upperdir={upper},workdir={work}"
    proc = run_as_newcomer(overlay, merged, checks, clone_dir)
    out = proc.stdout
    details = f"install command: {install}\n--- stdout ---\n{out}\n--- stderr ---\n{proc.stderr}"
    assert "install-exit=0" in out, details
    assert out.count("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)") == 2, details
    assert "again-exit=0" in out, details
    assert "system-trio=1" in out, f"the system Python must be left alone\n{details}"
