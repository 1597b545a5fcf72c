#!/usr/bin/env bash
# packaging/standalone.sh DEST: build DEST/pyinit/, pyinit as a folder that needs only glibc.
#
# Run as root on Debian 12 (apt and pip only).  The folder holds the executables `pyinit`
# and `pyinitctl` and `_internal/` (Python, the standard library modules pyinit imports,
# trio, psutil), which both share; copy it into any glibc image
# (`COPY --from=build /opt/pyinit /opt/pyinit`) and run /opt/pyinit/pyinit (and
# /opt/pyinit/pyinitctl for HEALTHCHECK): the image needs no Python.  The last line printed is
# `glibc floor: 2.NN`, the oldest glibc the folder runs on.  docs/standalone.md says why
# each choice below was made (one folder, not one file: pyinit itself is PID 1 and
# nothing is unpacked to /tmp).
#
# 1. apt-gets what the build needs, if missing (listed below, with why);
# 2. a venv from Debian's /usr/bin/python3 in $PYINIT_STANDALONE_WORK (default
#    DEST/.build, kept so a rebuild is quick), with PyInstaller pinned
#    (packaging/standalone-constraints.txt) and its launcher compiled from source with
#    zlib linked in statically (PYI_STATIC_ZLIB=1: the launcher then needs only libc),
#    and trio and psutil with their pinned dependencies (constraints.txt);
# 3. PyInstaller --onedir from packaging/pyinit.spec (two entries, pyinit and
#    pyinitctl, sharing one _internal/), which leaves out the modules
#    pyinit never imports and the runtime hooks it does not need, collects pyinit and
#    the standard library as plain .pyc files (faster to start than PyInstaller's
#    archives) and keeps PyInstaller's bootstrap from loading ctypes;
# 4. packaging/check_bundle.py: both executables are there, every library needed from
#    outside the folder is glibc's, and the highest GLIBC_x.y asked for is the floor it
#    prints.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
mkdir -p "$1"
dest=$(cd "$1" && pwd)
work=${PYINIT_STANDALONE_WORK:-$dest/.build}

# python3-venv: the build venv.  libpython3.11: Debian 12's Python as a shared library,
# which the bundle carries.  gcc, libc6-dev: PyInstaller's launcher is compiled from
# source.  zlib1g-dev: its libz.a, linked into the launcher.  binutils: objdump and
# strip for PyInstaller, readelf for the check.
packages=(python3-venv libpython3.11 gcc libc6-dev zlib1g-dev binutils)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=$work/venv
[ -x "$venv/bin/pip" ] || /usr/bin/python3 -m venv "$venv"
# A no-op when the pinned version is there already; a changed pin is built again.
PYI_STATIC_ZLIB=1 "$venv/bin/pip" install -q --disable-pip-version-check \
    --no-binary pyinstaller -c "$here/standalone-constraints.txt" pyinstaller
# pyinit itself is taken from this checkout by the spec (nothing is built in it);
# trio and psutil (the control server's status, in PID 1) are the dependencies it imports.
"$venv/bin/pip" install -q --disable-pip-version-check -c "$src/constraints.txt" trio psutil

"$venv/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$dest" --workpath "$work/pyinstaller" "$here/pyinit.spec"

"$venv/bin/python3" "$here/check_bundle.py" "$dest/pyinit"
