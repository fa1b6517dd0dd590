"""Golden error cases: each file in tests/cases/bad ends with `# expect: LINE:COL: MESSAGE` lines.

Each expected diagnostic must appear, in order, with the file, line and column and exactly the
expected message; every one has a hint.
"""
import re
from pathlib import Path

import pytest

import specc


CASES = sorted((Path(__file__).parent / "cases" / "bad").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.*)$", re.M)


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_bad_spec(path, monkeypatch):
    monkeypatch.setenv("SPECC_MAX_PARAM_BYTES", "1e9")
    expected = [(int(a), int(b), m) for a, b, m in EXPECT.findall(path.read_text())]
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(specc.SpecError) as info:
        specc.build(path)
    diags = info.value.diagnostics
    assert len(diags) == len(expected), "\n".join(d.format() for d in diags)
    for d, (line, col, message) in zip(diags, expected):
        assert d.file == str(path)
        assert (d.line, d.col) == (line, col), d.format()
        assert d.message == message, d.format()
        assert d.hint, f"no hint for: {d.format()}"


@pytest.mark.parametrize("name", ["unknown_op", "many_errors", "tag"])
def test_cli_prints_location_caret_and_hint(name, cli):
    path = Path(__file__).parent / "cases" / "bad" / f"{name}.yaml"
    r = cli("build", path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    first = EXPECT.findall(path.read_text())[0]
    lines = r.stderr.splitlines()
    assert lines[0] == f"{path}:{first[0]}:{first[1]}: error: {first[2]}"
    caret = lines[2]
    assert caret.strip() == "^" and caret.index("^") == 4 + int(first[1]) - 1
    assert lines[3].startswith("hint: ")
    assert r.stdout == ""
