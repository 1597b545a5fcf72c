"""packaging/check_bundle.py on small folders: it finds what a bundle needs from outside.

The real bundle is checked in the e2e tier (tests/e2e/test_e2e_standalone.py); here the
check itself, on copies of this machine's binaries: /bin/true needs only glibc, Debian's
python3.11 also needs libz and libexpat, which a folder holding it alone lacks.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")

pytestmark = [
    pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)"),
    pytest.mark.skipif(not Path("/bin/true").is_file(), reason="needs /bin/true"),
]


@pytest.fixture(scope="module")
def check() -> ModuleType:
    """packaging/check_bundle.py, imported from its path."""
    spec = importlib.util.spec_from_file_location(
        "check_bundle", ROOT / "packaging" / "check_bundle.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_libc_only_folder_passes_with_a_floor(check: ModuleType, tmp_path: Path) -> None:
    """/bin/true alone: no problem; its GLIBC_2.x versions give the floor."""
    shutil.copy2("/bin/true", tmp_path / "true")
    problems, floor = check.check(tmp_path)
    assert problems == []
    assert floor[0] == 2 and floor[1] >= 2
    assert floor == max(check.glibc_versions(tmp_path / "true"))


@pytest.mark.skipif(not PYTHON.is_file(), reason=f"needs {PYTHON}")
def test_library_from_outside_the_folder_is_named(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Debian's python alone: libz/libexpat are needed and not in the folder: exit 1."""
    shutil.copy2(PYTHON, tmp_path / "python")
    problems, _ = check.check(tmp_path)
    needed = set(check.needed_libraries(tmp_path / "python"))
    outside = sorted(lib for lib in needed if not check.is_glibc(lib))
    assert outside, needed
    assert sorted(problems) == [f"python needs {lib}, not in the bundle" for lib in outside]
    assert check.main([str(tmp_path)]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("glibc floor: 2.")


def test_both_entries_must_be_in_the_folder(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyinit alone is a problem named on its own line (exit 1); with pyinitctl beside it, 0."""
    shutil.copy2("/bin/true", tmp_path / "pyinit")
    assert check.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check_bundle: pyinitctl missing: the folder must hold it beside pyinit"
    assert out[-1].startswith("glibc floor: 2.")
    shutil.copy2("/bin/true", tmp_path / "pyinitctl")
    assert check.main([str(tmp_path)]) == 0
