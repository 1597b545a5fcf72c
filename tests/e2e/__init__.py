"""End-to-end tests: pyinit as the real entrypoint of real runc containers.

The tier builds a Debian bookworm root filesystem with mmdebstrap (cached),
turns each example under ``examples/`` into an "image" by applying its
Dockerfile (see :mod:`dockerfile`), and runs containers from it with runc.
Run with ``python3 -m pytest tests/e2e -m e2e -x -v`` as root.
"""
