"""The Dockerfile translator the tier relies on (pure parsing: no rootfs, no runc)."""

from __future__ import annotations

import pytest

from .dockerfile import (
    Image,
    apt_packages,
    exec_form,
    is_pyinit_pip_install,
    parse,
    parse_env,
)
from .rootfs import BASE_PACKAGES, REPO_ROOT


@pytest.mark.e2e
def test_parse_joins_continuations_and_drops_comments() -> None:
    """Continuation lines become one instruction; comments vanish, even inside RUN."""
    text = '# c\nFROM debian:bookworm\nRUN a \\\n    # inner\n    && b\nCMD ["x"]\n'
    assert [(i.keyword, i.text) for i in parse(text)] == [
        ("FROM", "debian:bookworm"),
        ("RUN", "a && b"),
        ("CMD", '["x"]'),
    ]


@pytest.mark.e2e
def test_apt_packages_and_pyinit_install_detection() -> None:
    """apt-get install lists are extracted; pip installs of pyinit are recognised."""
    run = "apt-get update && apt-get install -y --no-install-recommends a b && rm -rf x"
    assert apt_packages(run) == ["a", "b"]
    assert is_pyinit_pip_install("pip install --break-system-packages pyinit")
    assert is_pyinit_pip_install("pip3 install pyinit==0.1")
    assert not is_pyinit_pip_install("pip install pyinitx")
    assert is_pyinit_pip_install("pip install --no-cache-dir /usr/src/pyinit")
    assert not is_pyinit_pip_install("pip install /usr/src/other")


@pytest.mark.e2e
def test_env_expansion_and_exec_form() -> None:
    """ENV expands earlier values; ENTRYPOINT/CMD must be JSON arrays."""
    assert parse_env("PATH=/x:$PATH B=${A}", {"PATH": "/bin", "A": "1"}) == {
        "PATH": "/x:/bin",
        "B": "1",
    }
    assert parse_env("K some value", {}) == {"K": "some value"}
    assert exec_form("CMD", '["a", "b"]') == ["a", "b"]
    with pytest.raises(ValueError, match="JSON-array"):
        exec_form("CMD", "redis-server --port 1")


@pytest.mark.e2e
def test_argv_puts_extra_flags_before_the_double_dash() -> None:
    """Extra pyinit flags land after the ENTRYPOINT's own (so they win), before ``--``."""
    image = Image("x", entrypoint=["pyinit", "--stop-timeout", "8", "--", "wrap"], cmd=["srv"])
    assert image.argv() == ["pyinit", "--stop-timeout", "8", "--", "wrap", "srv"]
    assert image.argv(["other"], ["--stop-timeout", "3"]) == [
        "pyinit",
        "--stop-timeout",
        "8",
        "--stop-timeout",
        "3",
        "--",
        "wrap",
        "other",
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("example", ["redis", "postgres", "nginx"])
def test_examples_only_use_base_packages(example: str) -> None:
    """Every package an example apt-installs is in the base rootfs (checked again at build)."""
    text = (REPO_ROOT / "examples" / example / "Dockerfile").read_text()
    packages = [p for i in parse(text) if i.keyword == "RUN" for p in apt_packages(i.text)]
    assert packages and set(packages) <= set(BASE_PACKAGES)
