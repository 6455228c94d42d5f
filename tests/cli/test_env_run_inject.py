"""Secrets into programs: `pk secrets env`, `pk run`, `pk read`, `pk inject`.

The node is populated once per module (one `secrets dir` import) and only read afterwards; the
commands run without an agent (PK_NO_AGENT=1) except where a test starts one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import CliNode, assert_error, assert_json_error
from tests.support import PASSWORD, pk_env, run_pk

Result = subprocess.CompletedProcess[bytes]

TRICKY = (
    "it's \"double\" 'single' '' \"\" $HOME ${HOME} $(touch pwned) `touch pwned2` "
    "\\back\\slash\\ \\n \\' \\\" %PATH% !bang\nline 2\r\n"
    "\ttab \u00e9\u6f22\U0001f389\u200b end\n\n"
)
VALUES: dict[str, bytes] = {
    "app/API_KEY": TRICKY.encode(),
    "app/QUOTES": b"'\"''\"\"'\\'",
    "app/DOLLARS": b"$1 $$ $@ $* $? ${x:-y} \\$",
    "app/EMPTY": b"",
    "app/TRAILING": b"ends with newlines\n\n\n",
    "app/sub/DB_URL": b"postgres://user:pa ss@host/db",
    "app/bad-name": b"not a variable name",
    "other/API_KEY": b"duplicate name",
    "simple/USER": b"alice",
    "simple/QUOTE": b"it's",
    "binary/HAS_NUL": b"a\x00b",
    "bin/RAW": b"\xff\xfe raw bytes",
    "run/TOKEN": b"tok-SPLITSECRET-42",
    "run/OTHER": b"second-hidden-value",
}


def as_value(stored: bytes) -> bytes:
    """docs/spec/entries.md, Values: a secret used as a value loses one final newline."""
    return stored.removesuffix(b"\r\n") if stored.endswith(b"\r\n") else stored.removesuffix(b"\n")


TRICKY_VALUE = as_value(TRICKY.encode())  # one final newline dropped
APP_VARS = {
    "API_KEY": as_value(VALUES["app/API_KEY"]),
    "QUOTES": VALUES["app/QUOTES"],
    "DOLLARS": VALUES["app/DOLLARS"],
    "EMPTY": VALUES["app/EMPTY"],
    "TRAILING": b"ends with newlines\n\n",
    "DB_URL": VALUES["app/sub/DB_URL"],
}
MASK = b"<concealed by pk>"


@pytest.fixture(scope="module")
def node(template_node: CliNode, tmp_path_factory: pytest.TempPathFactory) -> CliNode:
    folder = tmp_path_factory.mktemp("env")
    path = folder / "node.pk"
    shutil.copyfile(template_node.path, path)
    mine = template_node.at(path)
    files = folder / "files"
    for name, value in VALUES.items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_bytes(value)
    env = mine.env(PK_NO_AGENT="1")
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    imported = run_pk("secrets", "dir", str(files), "v", env=env)
    assert imported.returncode == 0, imported.stderr
    return mine


@pytest.fixture
def env(node: CliNode) -> dict[str, str]:
    return node.env(PK_NO_AGENT="1")


def pk(env: dict[str, str], *args: str, **extra: str) -> Result:
    return subprocess.run(
        [sys.executable, "-m", "polykey", *args],
        env={**env, **extra},
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def source_in_bash(script: bytes, names: list[str], folder: Path) -> list[bytes]:
    """Eval the unix output in bash as the docs say; each variable's bytes as bash sees them."""
    path = folder / "vars.sh"
    path.write_bytes(script)
    show = "".join(f'printf "%s\\0" "${name}"; ' for name in names)
    shown = subprocess.run(
        ["bash", "-c", f'eval "$(cat "$1")"; {show}', "bash", str(path)],
        capture_output=True,
        check=True,
        cwd=folder,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"},
    ).stdout
    parts = shown.split(b"\0")
    assert parts[-1] == b""
    return parts[:-1]


# --- secrets env: names -------------------------------------------------------------------------


def test_env_reads_a_directory_recursively_and_names_variables_after_file_names(
    env: dict[str, str],
) -> None:
    result = pk(env, "secrets", "env", "v:app", "--invalid", "skip", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {k: v.decode() for k, v in APP_VARS.items()}


def test_env_of_a_whole_vault_and_of_one_secret(env: dict[str, str]) -> None:
    whole = pk(
        env, "secrets", "env", "v", "--invalid", "skip", "--duplicate", "skip", "--format", "json"
    )
    assert whole.returncode == 3  # the NUL and the non-UTF-8 value cannot be printed as JSON
    one = pk(env, "secrets", "env", "v:app/sub/DB_URL", "--format", "json")
    assert json.loads(one.stdout) == {"DB_URL": VALUES["app/sub/DB_URL"].decode()}
    several = pk(env, "secrets", "env", "v:simple", "v:app/sub", "--format", "json")
    assert json.loads(several.stdout) == {
        "USER": "alice",
        "QUOTE": "it's",
        "DB_URL": "postgres://user:pa ss@host/db",
    }


def test_env_renames_a_secret_with_equals_name(env: dict[str, str]) -> None:
    result = pk(
        env,
        "secrets",
        "env",
        "v:simple/USER=DB_USER",
        "v:app/bad-name=GOOD_NAME",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"DB_USER": "alice", "GOOD_NAME": "not a variable name"}


def test_an_invalid_name_is_an_error_by_default(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app")
    message = assert_error(result, 3)
    assert "v:app/bad-name gives no valid variable name" in message
    renamed = pk(env, "secrets", "env", "v:simple/USER=1BAD")
    assert "v:simple/USER gives no valid variable name" in assert_error(renamed, 3)
    dashed = pk(env, "secrets", "env", "v:simple/USER=A-B")
    assert_error(dashed, 3)


def test_an_invalid_name_is_warned_about_and_skipped_with_invalid_warn(
    env: dict[str, str],
) -> None:
    result = pk(env, "secrets", "env", "v:app", "--invalid", "warn", "--format", "json")
    assert result.returncode == 0
    assert result.stderr == b"pk: warning: v:app/bad-name gives no valid variable name; skipped\n"
    assert set(json.loads(result.stdout)) == set(APP_VARS)


def test_an_invalid_name_is_skipped_silently_with_invalid_skip(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app", "--invalid", "skip", "--format", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    assert "bad-name" not in result.stdout.decode()


def test_a_duplicate_name_is_an_error_by_default(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app/API_KEY", "v:other/API_KEY")
    assert "API_KEY is given twice (v:other/API_KEY)" in assert_error(result, 3)
    renamed = pk(env, "secrets", "env", "v:simple/USER=X", "v:simple/QUOTE=X")
    assert "X is given twice" in assert_error(renamed, 3)


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_a_duplicate_keeps_the_first_value_with_warn_or_skip(
    env: dict[str, str], policy: str
) -> None:
    result = pk(
        env,
        "secrets",
        "env",
        "v:other/API_KEY",
        "v:app/API_KEY",
        "--duplicate",
        policy,
        "--format",
        "json",
    )
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"API_KEY": "duplicate name"}
    warning = b"pk: warning: API_KEY is given twice (v:app/API_KEY); skipped\n"
    assert result.stderr == (warning if policy == "warn" else b"")


# --- secrets env: formats -----------------------------------------------------------------------


def test_unix_output_sourced_in_bash_reproduces_every_value_byte_for_byte(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = pk(env, "secrets", "env", "v:app", "--invalid", "skip")
    assert result.returncode == 0, result.stderr
    names = list(APP_VARS)
    assert source_in_bash(result.stdout, names, tmp_path) == [APP_VARS[n] for n in names]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_unix_output_exports_the_variables_to_programs(env: dict[str, str], tmp_path: Path) -> None:
    result = pk(env, "secrets", "env", "v:app/API_KEY", "--format", "unix")
    script = tmp_path / "vars.sh"
    script.write_bytes(result.stdout)
    child = subprocess.run(
        ["bash", "-c", f'. "{script}"; exec env'], capture_output=True, check=True
    ).stdout
    assert b"API_KEY=" + TRICKY_VALUE + b"\n" in child


def test_each_format_writes_simple_values_as_documented(env: dict[str, str]) -> None:
    expected = {
        "unix": "export USER='alice'\nexport QUOTE='it'\\''s'\n",
        "dotenv": "USER='alice'\nQUOTE=\"it's\"\n",
        "powershell": "$env:USER = 'alice'\n$env:QUOTE = 'it''s'\n",
        "cmd": 'set "USER=alice"\nset "QUOTE=it\'s"\n',
        "json": '{\n  "USER": "alice",\n  "QUOTE": "it\'s"\n}\n',
    }
    for fmt, text in expected.items():
        result = pk(env, "secrets", "env", "v:simple/USER", "v:simple/QUOTE", "--format", fmt)
        assert (result.returncode, result.stdout.decode(), result.stderr) == (0, text, b""), fmt


def test_the_default_format_is_unix(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:simple/USER")
    assert result.stdout == b"export USER='alice'\n"


def test_json_output_parses_to_the_exact_values(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app", "--invalid", "skip", "--format", "json")
    assert json.loads(result.stdout)["API_KEY"] == TRICKY.removesuffix("\n")


def test_dotenv_escapes_quotes_backslashes_newlines_and_dollars(env: dict[str, str]) -> None:
    result = pk(
        env,
        "secrets",
        "env",
        "v:app/QUOTES",
        "v:app/DOLLARS",
        "v:app/TRAILING",
        "--format",
        "dotenv",
    )
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines == [
        "QUOTES=\"'\\\"''\\\"\\\"'\\\\'\"",
        'DOLLARS="\\$1 \\$\\$ \\$@ \\$* \\$? \\${x:-y} \\\\\\$"',
        "TRAILING='ends with newlines",
        "",
        "'",
    ]


def test_powershell_doubles_single_quotes_and_keeps_the_rest(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app/QUOTES", "--format", "powershell")
    assert result.stdout == b"$env:QUOTES = '''\"''''\"\"''\\'''\n"


def test_cmd_refuses_a_value_it_cannot_carry(env: dict[str, str]) -> None:
    for spec in ("v:app/TRAILING", "v:app/API_KEY"):
        result = pk(env, "secrets", "env", spec, "--format", "cmd")
        assert "cmd cannot carry" in assert_error(result, 3)


@pytest.mark.parametrize("fmt", ["unix", "dotenv", "json", "powershell", "cmd"])
def test_a_value_with_a_nul_byte_is_refused_in_every_format(env: dict[str, str], fmt: str) -> None:
    result = pk(env, "secrets", "env", "v:binary", "--format", fmt)
    if fmt == "json":  # with --format json, the error is a JSON object too
        error = assert_json_error(result, 3)
        assert "HAS_NUL holds a NUL byte" in error["message"]
    else:
        assert "HAS_NUL holds a NUL byte" in assert_error(result, 3)


def test_a_value_that_is_not_utf8_cannot_be_printed(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:bin")
    assert "RAW is not UTF-8 text" in assert_error(result, 3)


# --- secrets env -- CMD -------------------------------------------------------------------------


def test_env_with_a_command_execs_it_with_the_variables(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:app/API_KEY", "--", "sh", "-c", 'printf %s "$API_KEY"')
    assert (result.returncode, result.stdout, result.stderr) == (0, TRICKY_VALUE, b"")


def test_env_with_a_command_adds_to_the_inherited_environment(env: dict[str, str]) -> None:
    result = pk(
        env,
        "secrets",
        "env",
        "v:simple/USER=DB_USER",
        "--",
        "sh",
        "-c",
        'printf "%s|%s" "$DB_USER" "$INHERITED"',
        INHERITED="from the parent",
    )
    assert result.stdout == b"alice|from the parent"


def test_env_with_a_command_passes_bytes_that_are_not_utf8(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:bin", "--", "sh", "-c", 'printf %s "$RAW"')
    assert result.stdout == VALUES["bin/RAW"]


def test_env_with_a_command_gives_its_arguments_and_exit_code_untouched(
    env: dict[str, str],
) -> None:
    result = pk(
        env,
        "secrets",
        "env",
        "v:simple/USER",
        "--",
        "sh",
        "-c",
        'printf "%s," "$@"; exit 9',
        "sh",
        "--format",
        "json",
        "--",
    )
    assert (result.returncode, result.stdout) == (9, b"--format,json,--,")


def test_env_with_a_command_refuses_a_nul_value(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = pk(env, "secrets", "env", "v:binary", "--", "touch", str(marker))
    assert "HAS_NUL holds a NUL byte" in assert_error(result, 3, hint=False)
    assert not marker.exists()


def test_env_with_a_missing_command_is_a_clear_error(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "env", "v:simple", "--", "no-such-program-here")
    assert "command not found: no-such-program-here" in assert_error(result, 3, hint=False)


# --- pk run -------------------------------------------------------------------------------------


def test_run_resolves_pk_uris_in_the_environment(env: dict[str, str]) -> None:
    result = pk(
        env,
        "run",
        "--",
        "sh",
        "-c",
        'printf "%s|%s|%s" "$DB" "$KEY" "$PLAIN"',
        DB="pk://v/app/sub/DB_URL",
        KEY="pk://v/app/API_KEY",
        PLAIN="not a reference",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"postgres://user:pa ss@host/db|" + TRICKY_VALUE + b"|not a reference"


def test_run_loads_an_env_file_and_resolves_its_references(
    env: dict[str, str], tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n\nDB=pk://v/app/sub/DB_URL\nexport USER_NAME='pk://v/simple/USER'\n"
        'PLAIN="a plain value"\n'
    )
    result = pk(
        env,
        "run",
        "--env-file",
        str(env_file),
        "--",
        "sh",
        "-c",
        'printf "%s|%s|%s" "$DB" "$USER_NAME" "$PLAIN"',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"postgres://user:pa ss@host/db|alice|a plain value"


def test_run_refuses_a_malformed_env_file(env: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GOOD=1\nthis line has no equals sign\n")
    result = pk(env, "run", "--env-file", str(env_file), "--", "true")
    assert f"{env_file}:2: expected NAME=VALUE" in assert_error(result, 3)


SPLIT_WRITER = """
import os, sys, time
secret = os.environ["TOKEN"].encode()
other = os.environ["OTHER"].encode()
half = len(secret) // 2
for fd in (1, 2):
    os.write(fd, b"start " + secret[:half])
    time.sleep(0.15)
    os.write(fd, secret[half:] + b" middle " + other[:3])
    time.sleep(0.15)
    os.write(fd, other[3:] + b" end\\n")
sys.exit(7)
"""


def test_run_mask_conceals_values_split_across_writes_in_stdout_and_stderr(
    env: dict[str, str],
) -> None:
    result = pk(
        env,
        "run",
        "--mask",
        "--",
        sys.executable,
        "-c",
        SPLIT_WRITER,
        TOKEN="pk://v/run/TOKEN",
        OTHER="pk://v/run/OTHER",
    )
    expected = b"start " + MASK + b" middle " + MASK + b" end\n"
    assert result.stdout == expected
    assert result.stderr == expected
    assert result.returncode == 7


def test_run_mask_conceals_a_value_printed_whole_and_repeated(env: dict[str, str]) -> None:
    result = pk(
        env,
        "run",
        "--mask",
        "--",
        "sh",
        "-c",
        'printf "%s%s\\n" "$T" "$T"; printf "[%s]" "$T" >&2',
        T="pk://v/run/TOKEN",
    )
    assert (result.stdout, result.stderr) == (MASK + MASK + b"\n", b"[" + MASK + b"]")


def test_run_without_mask_shows_the_value(env: dict[str, str]) -> None:
    result = pk(env, "run", "--", "sh", "-c", 'printf %s "$T"', T="pk://v/run/TOKEN")
    assert result.stdout == VALUES["run/TOKEN"]


@pytest.mark.parametrize("mask", [[], ["--mask"]])
def test_run_gives_the_exit_code_of_the_program(env: dict[str, str], mask: list[str]) -> None:
    for code in (0, 1, 42):
        result = pk(env, "run", *mask, "--", "sh", "-c", f"exit {code}", T="pk://v/run/TOKEN")
        assert result.returncode == code


def test_run_with_a_reference_to_a_missing_vault_or_secret_fails(env: dict[str, str]) -> None:
    vault = pk(env, "run", "--", "true", T="pk://nosuch/x")
    assert "No such vault: nosuch" in assert_error(vault, 31)
    secret = pk(env, "run", "--", "true", T="pk://v/nosuch")
    assert "No such secret: v:nosuch" in assert_error(secret, 33)
    bad = pk(env, "run", "--", "true", T="pk://only-a-vault")
    assert "not a secret reference" in assert_error(bad, 3)


def test_the_programs_arguments_do_not_change_how_pk_reports_its_errors(
    env: dict[str, str],
) -> None:
    result = pk(env, "run", "--", "some-tool", "--format", "json", T="pk://nosuch/x")
    assert "No such vault: nosuch" in assert_error(result, 31)


# --- pk read, pk inject -------------------------------------------------------------------------


def test_read_prints_one_secret_by_its_reference(env: dict[str, str]) -> None:
    result = pk(env, "read", "pk://v/app/API_KEY")
    assert (result.returncode, result.stdout, result.stderr) == (0, TRICKY_VALUE, b"")
    raw = pk(env, "read", "pk://v/bin/RAW")
    assert raw.stdout == VALUES["bin/RAW"]


def test_read_of_a_missing_or_malformed_reference_fails(env: dict[str, str]) -> None:
    assert_error(pk(env, "read", "pk://nosuch/x"), 31)
    assert_error(pk(env, "read", "pk://v/app/nosuch"), 33)
    assert_error(pk(env, "read", "v:app/API_KEY"), 3)


TEMPLATE = (
    "db = {{ pk://v/app/sub/DB_URL }}\n"
    "user={{pk://v/simple/USER}} again={{  pk://v/simple/USER  }}\n"
    "kept: { not a placeholder } {{ other }}\n"
)
RENDERED = (
    b"db = postgres://user:pa ss@host/db\n"
    b"user=alice again=alice\n"
    b"kept: { not a placeholder } {{ other }}\n"
)


def test_inject_renders_a_template_to_standard_output(env: dict[str, str], tmp_path: Path) -> None:
    template = tmp_path / "config.tpl"
    template.write_text(TEMPLATE)
    result = pk(env, "inject", "-i", str(template))
    assert (result.returncode, result.stdout, result.stderr) == (0, RENDERED, b"")
    piped = subprocess.run(
        [sys.executable, "-m", "polykey", "inject"],
        env=env,
        input=TEMPLATE.encode(),
        capture_output=True,
        check=False,
    )
    assert piped.stdout == RENDERED


def test_inject_writes_a_new_private_file(env: dict[str, str], tmp_path: Path) -> None:
    template = tmp_path / "config.tpl"
    template.write_text(TEMPLATE)
    out = tmp_path / "config"
    result = pk(env, "inject", "-i", str(template), "-o", str(out))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert out.read_bytes() == RENDERED
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_inject_refuses_to_overwrite_an_existing_file(env: dict[str, str], tmp_path: Path) -> None:
    template = tmp_path / "config.tpl"
    template.write_text(TEMPLATE)
    out = tmp_path / "config"
    out.write_text("keep me")
    result = pk(env, "inject", "-i", str(template), "-o", str(out))
    assert "exists" in assert_error(result, 2)
    assert out.read_text() == "keep me"
    target = tmp_path / "elsewhere"
    link = tmp_path / "link"
    link.symlink_to(target)  # dangling: writing through it would create the target
    followed = pk(env, "inject", "-i", str(template), "-o", str(link))
    assert followed.returncode != 0
    assert not target.exists()


def test_inject_with_an_unknown_vault_fails_with_exit_31_and_writes_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    template = tmp_path / "config.tpl"
    template.write_text("a={{ pk://v/simple/USER }} b={{ pk://nosuch/x }}\n")
    out = tmp_path / "config"
    result = pk(env, "inject", "-i", str(template), "-o", str(out))
    assert "No such vault: nosuch" in assert_error(result, 31)
    assert not out.exists()


# --- the same through an agent ------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_env(node: CliNode) -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="pkr-", dir="/tmp"))
    env = pk_env(node.path, PK_RUNTIME_DIR=str(base))
    started = run_pk("agent", "start", "--background", env={**env, "PK_PASSWORD": PASSWORD})
    assert started.returncode == 0, started.stderr
    status = json.loads(next(base.glob("*/status.json")).read_text())
    try:
        yield env
    finally:
        run_pk("agent", "stop", env=env)
        with contextlib.suppress(ProcessLookupError):
            os.kill(status["pid"], 9)
        shutil.rmtree(base, ignore_errors=True)


def test_env_run_read_and_inject_work_the_same_through_an_agent(
    agent_env: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    template = tmp_path / "config.tpl"
    template.write_text(TEMPLATE)
    commands: list[tuple[list[str], dict[str, str]]] = [
        (["secrets", "env", "v:app", "--invalid", "skip"], {}),
        (["secrets", "env", "v:app", "--invalid", "warn", "--format", "json"], {}),
        (["secrets", "env", "v:app"], {}),
        (["secrets", "env", "v:app/API_KEY", "--", "sh", "-c", 'printf %s "$API_KEY"'], {}),
        (
            ["run", "--mask", "--", sys.executable, "-c", SPLIT_WRITER],
            {"TOKEN": "pk://v/run/TOKEN", "OTHER": "pk://v/run/OTHER"},
        ),
        (["read", "pk://v/app/API_KEY"], {}),
        (["inject", "-i", str(template)], {}),
        (["inject", "-i", str(template), "-o", str(tmp_path / "x")], {"T": "pk://nosuch/x"}),
    ]
    for args, extra in commands:
        direct = pk(env, *args, **extra)
        (tmp_path / "x").unlink(missing_ok=True)
        served = pk(agent_env, *args, **extra)
        assert (served.returncode, served.stdout, served.stderr) == (
            direct.returncode,
            direct.stdout,
            direct.stderr,
        ), args
    log = next(Path(agent_env["PK_RUNTIME_DIR"]).glob("*/agent.log")).read_text()
    assert "secrets.env ok" in log and "secrets.cat ok" in log


# --- a value's final newline (docs/spec/entries.md, Values) --------------------------------------


@pytest.fixture
def echoed(cli_node: CliNode) -> dict[str, str]:
    """A node whose secrets were written as `echo VALUE | pk secrets write` writes them, plus an
    entry imported from pass (with its .pass) and a secret whose name holds a bidi override."""
    env = cli_node.env(PK_NO_AGENT="1")
    assert run_pk("vaults", "create", "app", env=env).returncode == 0
    for address, value in [
        ("app:prod/X", b"hunter2\n"),
        ("app:prod/CRLF", b"windows\r\n"),
        ("app:prod/TWO", b"two\n\n"),
        ("app:prod/NONE", b"as is"),
        ("app:mail/password", b"pw"),
        ("app:mail/username", b"bob"),
        ("app:mail/.pass", b"pw\nuser: bob\n"),
        ("app:odd/a\u202eb", b"v"),
    ]:
        written = run_pk("secrets", "write", address, env=env, input=value)
        assert written.returncode == 0, written.stderr
    return env


def in_terminal(env: dict[str, str], *args: str) -> bytes:
    """What a terminal shows of `pk ARGS` (standard output on a pseudo-terminal)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "polykey", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return out


def test_a_value_written_with_a_final_newline_is_used_without_it(
    echoed: dict[str, str], tmp_path: Path
) -> None:
    env = echoed
    printed = pk(env, "secrets", "env", "app:prod", "--format", "json")
    assert json.loads(printed.stdout) == {
        "X": "hunter2",
        "CRLF": "windows",
        "TWO": "two\n",
        "NONE": "as is",
    }
    assert pk(env, "secrets", "env", "app:prod/X").stdout == b"export X='hunter2'\n"
    given = pk(env, "secrets", "env", "app:prod/X", "--", "sh", "-c", 'printf "[%s]" "$X"')
    assert given.stdout == b"[hunter2]"
    ran = pk(env, "run", "--", "sh", "-c", 'printf "[%s]" "$X"', X="pk://app/prod/X")
    assert ran.stdout == b"[hunter2]"
    masked = pk(env, "run", "--mask", "--", "sh", "-c", 'echo "[$X]"', X="pk://app/prod/X")
    assert masked.stdout == b"[<concealed by pk>]\n"
    assert pk(env, "read", "pk://app/prod/X").stdout == b"hunter2"
    assert in_terminal(env, "read", "pk://app/prod/X") == b"hunter2\r\n"
    template = tmp_path / "config.yaml.tpl"
    template.write_text(
        "db:\n  password: {{ pk://app/prod/X }}\n  user: {{ pk://app/prod/NONE }}\n"
    )
    rendered = pk(env, "inject", "-i", str(template))
    assert rendered.stdout == b"db:\n  password: hunter2\n  user: as is\n"
    # stored as given: cat prints the bytes
    assert pk(env, "secrets", "cat", "app:prod/X").stdout == b"hunter2\n"


def test_env_of_an_entry_leaves_out_its_pass_file(echoed: dict[str, str]) -> None:
    result = pk(echoed, "secrets", "env", "app:mail", "--format", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    assert json.loads(result.stdout) == {"password": "pw", "username": "bob"}
    named = pk(echoed, "secrets", "env", "app:mail/.pass")  # named on its own: as any secret
    assert "app:mail/.pass gives no valid variable name" in assert_error(named, 3)


def test_a_warning_shows_a_secret_path_escaped(echoed: dict[str, str]) -> None:
    result = pk(echoed, "secrets", "env", "app:odd", "--invalid", "warn")
    assert result.returncode == 0
    assert (
        result.stderr == b"pk: warning: app:odd/a\\u202eb gives no valid variable name; skipped\n"
    )


def test_a_reference_names_a_path_with_a_space_as_percent_20(
    env: dict[str, str], tmp_path: Path
) -> None:
    written = subprocess.run(
        [sys.executable, "-m", "polykey", "secrets", "write", "v:files/db password"],
        env=env,
        input=b"spaced out",
        capture_output=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert pk(env, "read", "pk://v/files/db%20password").stdout == b"spaced out"
    template = tmp_path / "t"
    template.write_text("pw={{ pk://v/files/db%20password }}\n")
    assert pk(env, "inject", "-i", str(template)).stdout == b"pw=spaced out\n"
    assert "not UTF-8" in assert_error(pk(env, "read", "pk://v/files/%ff"), 3)


def test_inject_force_replaces_an_existing_file_whole_and_private(
    env: dict[str, str], tmp_path: Path
) -> None:
    template = tmp_path / "config.tpl"
    template.write_text(TEMPLATE)
    out = tmp_path / "config"
    out.write_text("old content, readable by all")
    out.chmod(0o644)
    result = pk(env, "inject", "-i", str(template), "-o", str(out), "--force")
    assert (result.returncode, result.stderr) == (0, b"")
    assert out.read_bytes() == RENDERED
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.tpl"]
