"""The docs say what the code does: defaults, citations, the supervisord mapping."""

from __future__ import annotations

import re
from pathlib import Path

from pyinit.plan import DEFAULT_STOP_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
PROSE = [*ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.md"), ROOT / "README.md"]
SOURCES = [*ROOT.glob("pyinit/**/*.py"), *ROOT.glob("tests/*.py")]


def test_no_citation_of_a_file_outside_the_repository() -> None:
    # The product reference lives outside the repository: code and docs cite docs/.
    citing = [
        str(p.relative_to(ROOT))
        for p in [*PROSE, *SOURCES]
        if p != Path(__file__) and "GUIDE" in p.read_text()
    ]
    assert citing == []


def test_every_stated_stop_timeout_default_is_the_real_one() -> None:
    stated = re.compile(r"stop-timeout`?[^|]{0,80}?\(default (\d+(?:\.\d+)?)")
    seen: dict[str, float] = {}
    for path in PROSE:
        for match in stated.finditer(path.read_text().replace("\n", " ")):
            seen[f"{path.relative_to(ROOT)}: {match.group(0)}"] = float(match.group(1))
    assert seen, "no stated default found: the pattern is stale"
    wrong = {where: value for where, value in seen.items() if value != DEFAULT_STOP_TIMEOUT}
    assert wrong == {}


def test_supervisord_autorestart_false_keeps_the_container_running() -> None:
    # restart=never alone gives up on a failure, and on-giveup=stop (the default) stops all.
    table = (ROOT / "docs" / "migrate-supervisord.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| `autorestart=false`"))
    assert "`restart=never`" in row and "`on-giveup=ignore`" in row


def test_every_pyinit_variable_is_in_the_one_table() -> None:
    usage = (ROOT / "docs" / "usage.md").read_text()
    table = usage[usage.index("## Where settings come from") :]
    table = table[: table.index("\n## ")]
    code = "".join(p.read_text() for p in ROOT.glob("pyinit/**/*.py"))
    variables = set(re.findall(r"\bPYINIT_[A-Z_]+[A-Z]\b", code))
    assert {"PYINIT_USER", "PYINIT_STOP_TIMEOUT"} <= variables
    assert [v for v in sorted(variables) if f"| `{v}` |" not in table] == []


def test_the_rule_lists_every_supervise_only_option() -> None:
    from pyinit.plan.sources import SUPERVISE_ONLY

    usage = (ROOT / "docs" / "usage.md").read_text()
    rule = usage[usage.index("#### Supervise-only options: one rule") :]
    rule = rule[: rule.index("\n### ")]
    flags = [f for text in SUPERVISE_ONLY.values() for f in text.split("/")]
    flags = [f if f.startswith("--") else "--" + f for f in flags]
    assert [f for f in flags if f"`{f}`" not in rule] == []


def test_every_example_image_has_a_pyinitctl_healthcheck() -> None:
    # Exec form, so no shell is needed; the standalone image has no pyinitctl on PATH.
    found = {}
    for dockerfile in sorted(ROOT.glob("examples/*/Dockerfile")):
        lines = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("HEALTHCHECK")]
        found[dockerfile.parent.name] = lines
    assert len(found) >= 6, found
    pattern = re.compile(
        r"HEALTHCHECK --interval=\d+s --timeout=\d+s --start-period=\d+s --retries=\d+ "
        r'CMD \["(/opt/pyinit/)?pyinitctl", "health"\]'
    )
    assert {name: lines for name, lines in found.items() if len(lines) != 1} == {}
    assert {
        name: lines[0] for name, lines in found.items() if not pattern.fullmatch(lines[0])
    } == {}


def test_every_pod_manifest_probes_with_pyinitctl_health() -> None:
    for manifest in sorted(ROOT.glob("examples/kubernetes/*.yaml")):
        text = manifest.read_text()
        for probe in ("livenessProbe:", "readinessProbe:"):
            block = text[text.index(probe) :].split("\n", 3)[:3]
            assert 'command: ["pyinitctl", "health"]' in block[2], (manifest.name, block)


def test_every_supervisorctl_command_is_mapped() -> None:
    text = (ROOT / "docs" / "migrate-supervisord.md").read_text()
    section = text[text.index("## supervisorctl -> pyinitctl") :]
    rows = [
        line for line in section[: section.index("\n## ")].splitlines() if line.startswith("| `")
    ]
    first = {word for row in rows for word in re.findall(r"`([a-z]+)", row.split(" | ")[0])}
    commands = "status start stop restart signal tail reread update avail pid shutdown"
    assert set(commands.split()) - first == set()
