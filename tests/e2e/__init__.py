"""End-to-end tests: the README on a pristine Debian, and the examples built with podman.

* ``test_e2e_readme``: the README's install command, taken from README.md, run
  in a pristine mmdebstrap bookworm (python3, python3-pip, git) as its root.
* the podman tier: ``examples/*/Dockerfile`` built with ``podman build`` and
  run, stopped, killed and inspected with podman (see :mod:`podman`).

Run with ``python3 -m pytest -q tests/e2e`` as root.
"""
