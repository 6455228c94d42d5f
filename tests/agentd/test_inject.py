"""Secrets into programs: env formats (sourced by bash byte for byte), run --mask, read, inject;
and the same commands giving the same results with and without an agent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PASSWORD, pk_env, run_pk

TRICKY = 'it\'s "quoted" $HOME `cmd` \\back\\slash\nsecond line\t\u00e9\u6f22 '


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    assert run_pk("bootstrap", env=e).returncode == 0
    assert run_pk("vaults", "create", "v", env=e).returncode == 0
    for path, value in [
        ("app/API_KEY", TRICKY.encode()),
        ("app/sub/DB_URL", b"postgres://x"),
        ("app/bad-name", b"x"),
        ("other/API_KEY", b"dup"),
    ]:
        assert run_pk("secrets", "write", f"v:{path}", env=e, input=value).returncode == 0
    return e


def test_unix_output_sourced_in_bash_reproduces_every_value_byte_for_byte(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = run_pk("secrets", "env", "v:app", "--invalid", "skip", env=env)
    assert out.returncode == 0, out.stderr
    script = tmp_path / "vars.sh"
    script.write_bytes(out.stdout)
    shown = subprocess.run(
        ["bash", "-c", f'source "{script}"; printf %s "$API_KEY"; printf "\\0%s" "$DB_URL"'],
        capture_output=True,
        check=True,
    ).stdout
    assert shown == TRICKY.encode() + b"\0postgres://x"


def test_every_format_is_parseable_and_json_is_exact(env: dict[str, str]) -> None:
    for fmt in ("unix", "dotenv", "powershell"):
        assert (
            run_pk(
                "secrets", "env", "v:app", "--invalid", "skip", "--format", fmt, env=env
            ).returncode
            == 0
        )
    out = run_pk("secrets", "env", "v:app", "--invalid", "skip", "--format", "json", env=env)
    assert json.loads(out.stdout) == {"API_KEY": TRICKY, "DB_URL": "postgres://x"}
    cmd = run_pk("secrets", "env", "v:app", "--invalid", "skip", "--format", "cmd", env=env)
    assert cmd.returncode == 3  # a newline cannot be carried by cmd
    assert b"cmd cannot carry" in cmd.stderr


def test_invalid_names_and_duplicates_follow_their_flags(env: dict[str, str]) -> None:
    assert run_pk("secrets", "env", "v:app", env=env).returncode == 3
    warned = run_pk("secrets", "env", "v:app", "--invalid", "warn", env=env)
    assert warned.returncode == 0 and b"warning" in warned.stderr
    dup = run_pk("secrets", "env", "v:app/API_KEY", "v:other", env=env)
    assert dup.returncode == 3 and b"given twice" in dup.stderr
    skipped = run_pk(
        "secrets",
        "env",
        "v:app/API_KEY",
        "v:other",
        "--duplicate",
        "skip",
        "--format",
        "json",
        env=env,
    )
    assert json.loads(skipped.stdout) == {"API_KEY": TRICKY}
    renamed = run_pk("secrets", "env", "v:other/API_KEY=OTHER", "--format", "json", env=env)
    assert json.loads(renamed.stdout) == {"OTHER": "dup"}


def test_a_command_after_double_dash_runs_with_the_variables(env: dict[str, str]) -> None:
    out = run_pk("secrets", "env", "v:app/sub", "--", "sh", "-c", 'printf %s "$DB_URL"', env=env)
    assert out.stdout == b"postgres://x"


def test_run_resolves_references_and_masks_them_even_split_across_writes(
    env: dict[str, str],
) -> None:
    program = (
        "import os,sys\n"
        "v=os.environ['DB']\n"
        "sys.stdout.write(v[:5]); sys.stdout.flush(); sys.stdout.write(v[5:]+' end\\n')\n"
        "sys.stderr.write('err '+v+'\\n'); sys.exit(7)\n"
    )
    plain = run_pk(
        "run",
        "--",
        sys.executable,
        "-c",
        "import os;print(os.environ['DB'])",
        env={**env, "DB": "pk://v/app/sub/DB_URL"},
    )
    assert plain.stdout == b"postgres://x\n"
    masked = run_pk(
        "run",
        "--mask",
        "--",
        sys.executable,
        "-c",
        program,
        env={**env, "DB": "pk://v/app/sub/DB_URL"},
    )
    assert masked.returncode == 7
    assert masked.stdout == b"<concealed by pk> end\n"
    assert masked.stderr == b"err <concealed by pk>\n"


def test_read_and_inject(env: dict[str, str], tmp_path: Path) -> None:
    assert run_pk("read", "pk://v/app/sub/DB_URL", env=env).stdout == b"postgres://x"
    template = tmp_path / "t.conf"
    template.write_text("url={{ pk://v/app/sub/DB_URL }}\nagain={{pk://v/app/sub/DB_URL}}\n")
    out = tmp_path / "out.conf"
    assert run_pk("inject", "-i", str(template), "-o", str(out), env=env).returncode == 0
    assert out.read_text() == "url=postgres://x\nagain=postgres://x\n"
    assert out.stat().st_mode & 0o777 == 0o600
    again = run_pk("inject", "-i", str(template), "-o", str(out), env=env)
    assert again.returncode != 0
    missing = tmp_path / "m.conf"
    missing.write_text("{{ pk://nope/x }}")
    assert run_pk("inject", "-i", str(missing), env=env).returncode == 31


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    run = str(tmp_path / "run")
    with_agent = pk_env(tmp_path / "a.pk", PK_PASSWORD=PASSWORD, PK_RUNTIME_DIR=run)
    without = pk_env(tmp_path / "b.pk", PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    for e in (with_agent, without):
        assert run_pk("bootstrap", env=e).returncode == 0
    assert run_pk("agent", "start", "-b", env=with_agent).returncode == 0
    try:
        yield with_agent, without
    finally:
        run_pk("agent", "stop", env=with_agent)


SCENARIO: list[tuple[tuple[str, ...], bytes | None]] = [
    (("vaults", "create", "v"), None),
    (("secrets", "write", "v:a/b"), b"one"),
    (("secrets", "write", "v:a/c"), b"two"),
    (("secrets", "cat", "v:a/b", "v:a/c"), None),
    (("secrets", "ls", "v", "-R"), None),
    (("tags", "add", "v:a/b", "t"), None),
    (("secrets", "ls", "--tag", "t"), None),
    (("secrets", "mv", "v:a/c", "v:d"), None),
    (("secrets", "cat", "v:a/c"), None),
    (("secrets", "cat", "nope:x"), None),
    (("secrets", "write", "v:../x"), b"x"),
    (("secrets", "rm", "v:a/b"), None),
    (("secrets", "find", "d"), None),
    (("secrets", "grep", "two"), None),
    (("vaults", "list", "--format", "json"), None),
    (("tags", "list"), None),
    (("secrets", "env", "v", "--format", "json"), None),
    (("node", "check"), None),
]


def test_every_command_behaves_the_same_with_and_without_the_agent(
    both: tuple[dict[str, str], dict[str, str]],
) -> None:
    with_agent, without = both
    for args, stdin in SCENARIO:
        a = run_pk(*args, env=with_agent, input=stdin)
        b = run_pk(*args, env=without, input=stdin)
        import re

        norm = [re.sub(rb"\(v[0-9a-v]{26}\)", b"(ID)", x) for x in (a.stdout, b.stdout)]
        if args[:2] == ("vaults", "list"):  # ids and times differ between two nodes
            norm = [json.dumps([v["name"] for v in json.loads(x)["vaults"]]).encode() for x in norm]
        assert (a.returncode, norm[0]) == (b.returncode, norm[1]), args
        assert a.stderr == b.stderr, args
