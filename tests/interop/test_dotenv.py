""".env files (docs/spec/dotenv.md): the reader's rules, its refusals, the writer's round trip,
and the two commands that read .env files, `pk import dotenv` and `pk run --env-file`, which
must read every file of the table the same way (they once disagreed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.cli.envfmt import render
from polykey.cli.inject import _read_env_file
from polykey.errors import InvalidInput
from polykey.interop import dotenv
from polykey.interop.errors import ImportFailed, MalformedSource
from polykey.interop.formats import read_dotenv
from polykey.node import Node
from tests.cli.helpers import CliNode, bootstrap, text
from tests.support import run_pk

CANARY = "S3CRET-CANARY"  # in every value of a bad file: it must never appear in a message

# --- the table: what users write, and what it means ----------------------------------------------

# (id, lines of a .env file, the variables they give); each case uses its own names, so that
# all of them together are one file too
VALID: list[tuple[str, str, dict[str, str]]] = [
    ("plain", "PLAIN=value", {"PLAIN": "value"}),
    ("export", "export EXPORTED=1", {"EXPORTED": "1"}),
    ("export-tabs", "export \t EXPORT_TAB=2", {"EXPORT_TAB": "2"}),
    ("a-variable-named-export", "export=3\nexport =4", {"export": "4"}),
    ("spaces-around", "  SPACED  =  padded value  \t", {"SPACED": "padded value"}),
    ("empty", "EMPTY=\nEMPTY_DQ=\"\"\nEMPTY_SQ=''", {"EMPTY": "", "EMPTY_DQ": "", "EMPTY_SQ": ""}),
    ("inline-comment", "INLINE=abc # a comment", {"INLINE": "abc"}),
    ("inline-comment-tab", "INLINE_TAB=abc\t# a comment", {"INLINE_TAB": "abc"}),
    ("hash-in-a-word", "URL=https://x.example/p#frag", {"URL": "https://x.example/p#frag"}),
    ("hash-first", "HASH_FIRST=#x\nHASH_SPACED= #y", {"HASH_FIRST": "#x", "HASH_SPACED": "#y"}),
    ("hash-quoted", "HASH_DQ=\"a # b\"\nHASH_SQ='c # d'", {"HASH_DQ": "a # b", "HASH_SQ": "c # d"}),
    (
        "comment-after-quotes",
        "AFTER_DQ=\"v\" # c\nAFTER_SQ='w'#c",
        {"AFTER_DQ": "v", "AFTER_SQ": "w"},
    ),
    (
        "single-quotes-are-literal",
        "SQ='lit \\n $HOME \"x\" \\'",
        {"SQ": 'lit \\n $HOME "x" \\'},
    ),
    (
        "double-quote-escapes",
        'DQ="tab\\there \\"q\\" \\$HOME back\\\\slash \\\'s \\r\\n"',
        {"DQ": 'tab\there "q" $HOME back\\slash \'s \r\n'},
    ),
    ("unknown-escapes-stay", 'WIN="C:\\dir\\x"', {"WIN": "C:\\dir\\x"}),
    (
        "multi-line-double",
        'MULTI="first\nsecond line\\nthird\n"',
        {"MULTI": "first\nsecond line\nthird\n"},
    ),
    (
        "multi-line-single",
        "PEM='-----BEGIN X-----\nAAAA\n-----END X-----\n'",
        {"PEM": "-----BEGIN X-----\nAAAA\n-----END X-----\n"},
    ),
    ("no-expansion", "DOLLAR=$HOME ${PATH} $(id) `id`", {"DOLLAR": "$HOME ${PATH} $(id) `id`"}),
    ("inner-quotes", 'INNER=it\'s "x"', {"INNER": 'it\'s "x"'}),
    ("last-wins", "DUP=first\nDUP=second", {"DUP": "second"}),
    ("dots-and-dashes", "spring.datasource-url=jdbc:x", {"spring.datasource-url": "jdbc:x"}),
    ("underscore-lower", "_lower_1=x", {"_lower_1": "x"}),
    ("equals-in-value", "EQUALS=a=b==", {"EQUALS": "a=b=="}),
    ("unicode", "UNICODE=h\u00e9llo \u2713", {"UNICODE": "h\u00e9llo \u2713"}),
    ("only-spaces-and-tabs-trimmed", "NBSP=\u00a0x\u00a0", {"NBSP": "\u00a0x\u00a0"}),
    ("line-separator-is-no-line-break", "LS=a\u2028b\x85c", {"LS": "a\u2028b\x85c"}),
    ("comments-and-blanks", "# top\n   # indented\n\n \t \nAFTER_BLANKS=1", {"AFTER_BLANKS": "1"}),
]

# whole files: what only a whole file can show (its first bytes, its line breaks, its end)
FILES: list[tuple[str, bytes, dict[str, str]]] = [
    ("bom", b"\xef\xbb\xbfBOM=1\n", {"BOM": "1"}),
    (
        "crlf",
        b"A=1\r\nB=\"two\r\nlines\"\r\nC='x\r\ny'\r\n",
        {"A": "1", "B": "two\nlines", "C": "x\ny"},
    ),
    ("lone-cr-is-text", b"CR=a\rb\n", {"CR": "a\rb"}),
    ("no-final-newline", b"A=1\nB='2'", {"A": "1", "B": "2"}),
]

# (id, file, the bad line's number, what the reader says about it)
BAD: list[tuple[str, bytes, int, str]] = [
    ("no-equals", f"GOOD=1\n{CANARY} on its own\n".encode(), 2, dotenv.EXPECTED),
    ("export-only", f"export {CANARY}\n".encode(), 1, dotenv.EXPECTED),
    ("name-starts-with-a-digit", f"1BAD={CANARY}\n".encode(), 1, dotenv.BAD_NAME),
    ("name-with-a-space", f"BAD NAME={CANARY}\n".encode(), 1, dotenv.BAD_NAME),
    ("quoted-name", f"'A'={CANARY}\n".encode(), 1, dotenv.BAD_NAME),
    ("no-name", f"={CANARY}\n".encode(), 1, dotenv.BAD_NAME),
    ("never-closed", f"A=1\nB='{CANARY}\nC=3\n".encode(), 2, dotenv.NEVER_CLOSED),
    ("final-backslash", f'A="{CANARY}\\'.encode(), 1, dotenv.NEVER_CLOSED),
    ("after-the-quote", f'A="{CANARY}" {CANARY}\n'.encode(), 1, dotenv.AFTER_QUOTE),
    (
        "counted-after-a-multi-line-value",
        f'M="a\nb\nc"\n{CANARY}\n'.encode(),
        4,
        dotenv.EXPECTED,
    ),
    ("single-quotes-do-not-escape", f"A='it\\'s {CANARY}'\n".encode(), 1, dotenv.AFTER_QUOTE),
]

NOT_TEXT: list[tuple[str, bytes, str]] = [
    ("not-utf8", b"A=" + CANARY.encode() + b"\xff\n", "is not UTF-8 text"),
    ("nul", b"A=" + CANARY.encode() + b"\x00\n", "holds a NUL byte"),
]


def one_file() -> str:
    return "".join(lines + "\n" for _, lines, _ in VALID)


def all_variables() -> dict[str, str]:
    out: dict[str, str] = {}
    for _, _, variables in VALID:
        assert not set(variables) & set(out), "each case names its own variables"
        out |= variables
    return out


# --- the reader --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(lines.encode(), want, id=case) for case, lines, want in VALID]
    + [pytest.param(data, want, id=case) for case, data, want in FILES],
)
def test_each_case_gives_its_variables(data: bytes, expected: dict[str, str]) -> None:
    assert dotenv.parse(data) == (expected, [])


def test_all_cases_in_one_file_give_all_variables() -> None:
    assert dotenv.parse(one_file().encode()) == (all_variables(), [])


@pytest.mark.parametrize(
    ("data", "line", "why"), [pytest.param(d, n, w, id=c) for c, d, n, w in BAD]
)
def test_a_bad_line_is_reported_by_number_and_reason(data: bytes, line: int, why: str) -> None:
    variables, bad = dotenv.parse(data)
    assert bad[0] == dotenv.BadLine(line, why)
    assert str(bad[0]) == f"line {line}: {why}"
    assert CANARY not in str(bad) and CANARY not in repr(bad)
    assert all(CANARY not in value for value in variables.values())


def test_reading_goes_on_after_a_bad_line() -> None:
    data = b'A=1\nnot an assignment\nB=\'never closed\nC=3\nD="x" y\nE=5\n'
    variables, bad = dotenv.parse(data)
    assert variables == {"A": "1", "C": "3", "E": "5"}
    assert bad == [
        dotenv.BadLine(2, dotenv.EXPECTED),
        dotenv.BadLine(3, dotenv.NEVER_CLOSED),
        dotenv.BadLine(5, dotenv.AFTER_QUOTE),
    ]


@pytest.mark.parametrize(("data", "why"), [pytest.param(d, w, id=c) for c, d, w in NOT_TEXT])
def test_a_file_that_is_not_text_is_refused_whole(data: bytes, why: str) -> None:
    with pytest.raises(dotenv.NotText) as info:
        dotenv.parse(data)
    assert str(info.value).startswith(why)
    assert CANARY not in str(info.value)


def test_an_empty_file_has_no_variables() -> None:
    assert dotenv.parse(b"") == ({}, [])
    assert dotenv.parse(b"\xef\xbb\xbf\n# only a comment\n") == ({}, [])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'A="\n' * 20_000, id="opening-double-quotes"),
        pytest.param(b"A='\n" * 20_000 + b'B="\n' * 20_000, id="unclosed-quotes"),
        pytest.param(b'A="' + b"\\" * 200_001, id="backslashes"),
        pytest.param(b"x\n" * 50_000, id="bad-lines"),
    ],
)
def test_hostile_files_are_read_in_linear_time(data: bytes) -> None:
    import time

    started = time.process_time()
    dotenv.parse(data)
    assert time.process_time() - started < 2


# --- the writer reads back -----------------------------------------------------------------------


@given(st.text().filter(lambda v: "\x00" not in v))
def test_every_value_the_writer_quotes_reads_back_exactly(value: str) -> None:
    assert dotenv.parse(f"NAME={dotenv.quote(value)}\n".encode()) == ({"NAME": value}, [])


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
        st.text().filter(lambda v: "\x00" not in v),
        max_size=8,
    )
)
def test_secrets_env_dotenv_output_reads_back_exactly(variables: dict[str, str]) -> None:
    written = render([(k, v.encode()) for k, v in variables.items()], "dotenv")
    assert dotenv.parse(written.encode()) == (variables, [])


def test_the_writer_uses_single_quotes_when_it_can() -> None:
    assert dotenv.quote("a b\n$c") == "'a b\n$c'"
    assert dotenv.quote("it's") == '"it\'s"'
    assert dotenv.quote("a\\b\r$") == '"a\\\\b\\r\\$"'


# --- both readers, in this process ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [pytest.param(lines.encode(), id=case) for case, lines, _ in VALID]
    + [pytest.param(data, id=case) for case, data, _ in FILES],
)
def test_import_and_run_read_each_file_the_same(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(data)
    imported, skipped = read_dotenv(data)
    assert skipped == []
    assert {k: v.decode() for k, v in imported} == _read_env_file(path)


@pytest.mark.parametrize(
    ("data", "line", "why"), [pytest.param(d, n, w, id=c) for c, d, n, w in BAD]
)
def test_import_and_run_refuse_each_bad_file_at_the_same_line(
    data: bytes, line: int, why: str, tmp_path: Path
) -> None:
    path = tmp_path / ".env"
    path.write_bytes(data)
    with pytest.raises(ImportFailed) as imported:
        read_dotenv(data)
    with pytest.raises(InvalidInput) as run:
        _read_env_file(path)
    assert str(imported.value.detail) == f"line {line}: {why}"
    assert str(run.value.detail) == f"{path}:{line}: {why}"
    for error in (imported.value, run.value):
        assert error.user_hint
        assert CANARY not in f"{error} {error.user_hint}"


def test_import_with_skip_bad_lists_the_lines_the_run_would_refuse() -> None:
    data = b"A=1\nnot an assignment\nB='never closed\nC=3\n"
    variables, skipped = read_dotenv(data, skip_bad=True)
    assert variables == [("A", b"1"), ("C", b"3")]
    assert skipped == [("line 2", dotenv.EXPECTED), ("line 3", dotenv.NEVER_CLOSED)]


@pytest.mark.parametrize(("data", "why"), [pytest.param(d, w, id=c) for c, d, w in NOT_TEXT])
def test_import_and_run_refuse_a_file_that_is_not_text(
    data: bytes, why: str, tmp_path: Path
) -> None:
    path = tmp_path / ".env"
    path.write_bytes(data)
    with pytest.raises(MalformedSource) as imported:
        read_dotenv(data)
    with pytest.raises(InvalidInput) as run:
        _read_env_file(path)
    assert why in str(imported.value.detail) and why in str(run.value.detail)
    for error in (imported.value, run.value):
        assert CANARY not in str(error)


# --- both commands, as real processes -------------------------------------------------------------

SHOW_ENV = (
    "import json, os, sys; json.dump({k: os.environ.get(k) for k in sys.argv[1:]}, sys.stdout)"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> CliNode:
    return bootstrap(tmp_path_factory.mktemp("dotenv") / "node.pk")


@pytest.fixture
def env(node: CliNode, tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return node.env(PK_RUNTIME_DIR=str(runtime), PK_NO_AGENT="1")


def imported(node: CliNode, vault: str) -> dict[str, str]:
    opened = Node.open(node.path, node.password.encode(), allow_weak=True)
    try:
        v = opened.vaults.open(vault)
        secrets = [e.path for e in v.ls("", recursive=True) if e.kind == "secret"]
        return {path: v.read(path).decode() for path in secrets}
    finally:
        opened.close()


def run_sees(env: dict[str, str], path: Path, names: list[str]) -> dict[str, str | None]:
    result = run_pk(
        "run", "--env-file", str(path), "--", sys.executable, "-c", SHOW_ENV, *names, env=env
    )
    assert result.returncode == 0, text(result.stderr)
    seen: dict[str, str | None] = json.loads(result.stdout)
    return seen


@pytest.mark.parametrize(
    ("vault", "data", "expected"),
    [pytest.param("table", one_file().encode(), all_variables(), id="the-table-in-one-file")]
    + [pytest.param(f"file-{case}", data, want, id=case) for case, data, want in FILES],
)
def test_pk_import_dotenv_and_pk_run_env_file_give_the_same_variables(
    node: CliNode,
    env: dict[str, str],
    tmp_path: Path,
    vault: str,
    data: bytes,
    expected: dict[str, str],
) -> None:
    path = tmp_path / ".env"
    path.write_bytes(data)
    result = run_pk("import", "dotenv", str(path), "--vault", vault, env=env)
    assert result.returncode == 0, text(result.stderr)
    assert imported(node, vault) == expected
    assert run_sees(env, path, list(expected)) == expected


@pytest.mark.parametrize(
    ("data", "line", "why"),
    [pytest.param(d, n, w, id=c) for c, d, n, w in BAD if c in ("never-closed", "no-equals")]
    + [pytest.param(NOT_TEXT[0][1], 0, NOT_TEXT[0][2], id="not-utf8")],
)
def test_pk_import_dotenv_and_pk_run_env_file_refuse_the_same_file(
    node: CliNode, env: dict[str, str], tmp_path: Path, data: bytes, line: int, why: str
) -> None:
    path = tmp_path / ".env"
    path.write_bytes(data)
    marker = tmp_path / "ran"
    results = {
        "import": (60, run_pk("import", "dotenv", str(path), "--vault", "refused", env=env)),
        "run": (3, run_pk("run", "--env-file", str(path), "--", "touch", str(marker), env=env)),
    }
    for command, (code, result) in results.items():
        err = text(result.stderr)
        assert result.returncode == code, (command, err)
        lines = err.splitlines()
        assert len(lines) == 2 and lines[1].startswith("pk: hint: "), (command, err)
        assert lines[0].startswith("pk: error: ") and why in lines[0], (command, err)
        if line:
            where = f"line {line}: " if command == "import" else f"{path}:{line}: "
            assert where in lines[0], (command, err)
        assert CANARY not in err and "Traceback" not in err, (command, err)
        assert result.stdout == b""
    assert not marker.exists()
    opened = Node.open(node.path, node.password.encode(), allow_weak=True)
    try:
        assert "refused" not in {v.name for v in opened.vaults.all()}  # nothing was written
    finally:
        opened.close()
