"""`pk otp`, `pk secrets cat --clip` and `pk completion`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from polykey.agent.runtime import pid_alive
from polykey.crypto.otp import parse
from tests.cli.helpers import CliNode, assert_error
from tests.support import run_pk

Result = subprocess.CompletedProcess[bytes]
KEY = b"12345678901234567890"
SECRET = base64.b32encode(KEY).decode().rstrip("=")
OTP_URI = f"otpauth://totp/ACME:alice?secret={SECRET}&issuer=ACME"
OTP8_URI = f"otpauth://totp/x?secret={SECRET}&digits=8&period=60&algorithm=SHA256"
CLIP_VALUE = b"clipboard secret \xc3\xa9 42"
QR_CHARACTERS = set(" \u2588\u2580\u2584")


@pytest.fixture(scope="module")
def node(template_node: CliNode, tmp_path_factory: pytest.TempPathFactory) -> CliNode:
    path = tmp_path_factory.mktemp("otp") / "node.pk"
    shutil.copyfile(template_node.path, path)
    mine = template_node.at(path)
    env = mine.env(PK_NO_AGENT="1")
    assert run_pk("vaults", "create", "v", env=env).returncode == 0
    for address, value in [
        ("v:otp", OTP_URI.encode() + b"\n"),
        ("v:otp8", OTP8_URI.encode()),
        ("v:bare", b"gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
        ("v:password", b"hunter2"),
        ("v:empty", b""),
        ("v:clip", CLIP_VALUE),
        ("v:echoed", CLIP_VALUE + b"\n"),  # as `echo VALUE | pk secrets write` stores it
        ("v:entry/password", b"entry password\n"),
        ("v:entry/username", b"someone"),
        ("v:entry/otp", OTP_URI.encode()),
        ("v:otp-only/otp", OTP_URI.encode()),
    ]:
        assert run_pk("secrets", "write", address, env=env, input=value).returncode == 0
    return mine


@pytest.fixture
def env(node: CliNode) -> dict[str, str]:
    e = node.env(PK_NO_AGENT="1")
    e.pop("DISPLAY", None)
    e.pop("WAYLAND_DISPLAY", None)
    return e


def pk(env: dict[str, str], *args: str) -> Result:
    return run_pk(*args, env=env)


def code_between(uri: str, run: Callable[[], object]) -> set[str]:
    """The codes valid at some moment during ``run()`` (a period may turn over meanwhile)."""
    spec = parse(uri)
    before = spec.code()
    run()
    return {before, spec.code()}


# --- pk otp ---------------------------------------------------------------------------------------


def test_otp_prints_the_current_six_digit_code(env: dict[str, str]) -> None:
    results: list[Result] = []
    valid = code_between(OTP_URI, lambda: results.append(pk(env, "otp", "v:otp")))
    (result,) = results
    assert result.returncode == 0, result.stderr
    code = result.stdout.decode()
    assert code.endswith("\n") and len(code) == 7 and code[:6].isdigit()
    assert code[:6] in valid


def test_otp_honours_digits_period_and_algorithm_of_the_uri(env: dict[str, str]) -> None:
    results: list[Result] = []
    valid = code_between(OTP8_URI, lambda: results.append(pk(env, "otp", "v:otp8")))
    code = results[0].stdout.decode().strip()
    assert len(code) == 8 and code in valid


def test_otp_accepts_a_bare_base32_key(env: dict[str, str]) -> None:
    results: list[Result] = []
    valid = code_between(SECRET, lambda: results.append(pk(env, "otp", "v:bare")))
    assert results[0].stdout.decode().strip() in valid


def test_otp_json_has_the_code_the_seconds_remaining_and_the_period(env: dict[str, str]) -> None:
    results: list[Result] = []
    valid = code_between(
        OTP_URI, lambda: results.append(pk(env, "otp", "v:otp", "--format", "json"))
    )
    doc = json.loads(results[0].stdout)
    assert set(doc) == {"code", "remaining", "period"}
    assert doc["code"] in valid
    assert doc["period"] == 30
    assert isinstance(doc["remaining"], int) and 1 <= doc["remaining"] <= 30


def test_otp_qr_prints_a_block_of_qr_characters(env: dict[str, str]) -> None:
    result = pk(env, "otp", "v:otp", "--qr")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) >= 15
    assert len({len(line) for line in lines}) == 1  # a rectangle
    assert set("".join(lines)) <= QR_CHARACTERS
    assert "\u2588" in result.stdout.decode()
    assert SECRET.encode() not in result.stdout


@pytest.mark.parametrize("address", ["v:password", "v:empty"])
def test_otp_of_a_secret_that_is_not_totp_is_refused(env: dict[str, str], address: str) -> None:
    message = assert_error(pk(env, "otp", address), 3)
    assert address in message
    assert "hunter2" not in message


def test_otp_of_a_missing_secret_or_vault_fails(env: dict[str, str]) -> None:
    assert_error(pk(env, "otp", "v:nosuch"), 33)
    assert_error(pk(env, "otp", "nosuch:otp"), 31)
    assert_error(pk(env, "otp", "no-colon"), 2)


# --- --clip ---------------------------------------------------------------------------------------


def test_clip_without_a_clipboard_is_exit_6_with_a_clear_message(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = pk({**env, "PATH": str(tmp_path)}, "secrets", "cat", "v:clip", "--clip")  # no tool
    message = assert_error(result, 6)
    assert message == "No clipboard tool is available"
    assert b"xclip" in result.stderr  # the hint names what to install
    assert CLIP_VALUE not in result.stderr


@pytest.mark.skipif(shutil.which("xclip") is None, reason="xclip is not installed")
def test_clip_with_xclip_but_no_display_says_so(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "cat", "v:clip", "--clip")
    message = assert_error(result, 6)
    assert "xclip is installed, but this session has no display" in message
    assert b"ssh -X" in result.stderr
    assert CLIP_VALUE not in result.stderr


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X server (Xvfb) for the clipboard tests."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None or shutil.which("xclip") is None:
        pytest.skip("Xvfb and xclip are needed for a clipboard (apt-get install xvfb xclip)")
    read, write = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "320x240x8"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    try:
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def clipboard(display: str) -> bytes:
    return subprocess.run(
        ["xclip", "-selection", "clipboard", "-out"],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        timeout=10,
        check=False,
    ).stdout


def copy_as_user(display: str, value: bytes) -> None:
    subprocess.run(
        ["xclip", "-selection", "clipboard", "-in"],
        env={**os.environ, "DISPLAY": display},
        input=value,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=True,
    )


def clip(env: dict[str, str], display: str, tmp_path: Path, *args: str) -> tuple[int, bytes, bytes]:
    """`pk secrets cat ... --clip` with stderr in a file (xclip keeps a pipe open: see below)."""
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        result = subprocess.run(
            [sys.executable, "-m", "polykey", "secrets", "cat", *args],
            env={**env, "DISPLAY": display},
            stdout=subprocess.PIPE,
            stderr=f,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    return result.returncode, result.stdout, err.read_bytes()


def test_clip_copies_the_value_and_clears_it_after_the_delay(
    env: dict[str, str], display: str, tmp_path: Path
) -> None:
    copy_as_user(display, b"before")
    code, out, err = clip(env, display, tmp_path, "v:clip", "--clip", "--clear-after", "2")
    assert (code, out, err) == (0, b"Copied v:clip; clearing in 2 s.\n", b"")
    assert clipboard(display) == CLIP_VALUE
    deadline = time.monotonic() + 15
    while clipboard(display) == CLIP_VALUE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert clipboard(display) == b""


def clearing_processes() -> set[int]:
    """The running `python -m polykey.cli.clip` children that clear the clipboard later."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"polykey.cli.clip" in cmdline and pid_alive(int(proc.name)):
                found.add(int(proc.name))
    return found


def test_clip_leaves_the_clipboard_alone_if_the_user_copied_something_else(
    env: dict[str, str], display: str, tmp_path: Path
) -> None:
    before = clearing_processes()
    code, _, _ = clip(env, display, tmp_path, "v:clip", "--clip", "--clear-after", "2")
    assert code == 0
    clearing = clearing_processes() - before
    assert len(clearing) == 1
    assert clipboard(display) == CLIP_VALUE
    copy_as_user(display, b"the user's own text")
    deadline = time.monotonic() + 20
    while any(pid_alive(pid) for pid in clearing) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in clearing)  # the clearing has run
    assert clipboard(display) == b"the user's own text"


def test_clip_copies_a_value_without_its_final_newline(
    env: dict[str, str], display: str, tmp_path: Path
) -> None:
    code, out, err = clip(env, display, tmp_path, "v:echoed", "--clip", "--clear-after", "0")
    assert (code, out, err) == (0, b"Copied v:echoed; not cleared automatically.\n", b"")
    assert clipboard(display) == CLIP_VALUE


def test_clip_of_an_entry_copies_its_password_as_pass_c_does(
    env: dict[str, str], display: str, tmp_path: Path
) -> None:
    code, out, err = clip(env, display, tmp_path, "v:entry", "-c", "--clear-after", "0")
    assert (code, out, err) == (0, b"Copied v:entry; not cleared automatically.\n", b"")
    assert clipboard(display) == b"entry password"


def test_clip_of_an_entry_without_a_password_names_what_to_copy(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "cat", "v:otp-only", "--clip")
    assert "v:otp-only has no password" in assert_error(result, 3)
    assert b"v:otp-only/FIELD" in result.stderr


def test_generate_clip_copies_the_new_value_and_prints_it_not(
    env: dict[str, str], display: str, tmp_path: Path
) -> None:
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "polykey",
                "secrets",
                "generate",
                "v:made",
                "-c",
                "--clear-after",
                "0",
            ],
            env={**env, "DISPLAY": display},
            stdout=subprocess.PIPE,
            stderr=f,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    assert (result.returncode, err.read_bytes()) == (0, b"")
    assert result.stdout == b"Copied the new secret of v:made; not cleared automatically.\n"
    value = run_pk("secrets", "cat", "v:made", env=env).stdout
    assert len(value) == 24 and clipboard(display) == value


def test_generate_clip_without_a_clipboard_replaces_nothing(env: dict[str, str]) -> None:
    assert assert_error(pk(env, "secrets", "generate", "v:never", "-c"), 6)
    assert assert_error(pk(env, "secrets", "generate", "v:clip", "-c", "-f"), 6)
    assert run_pk("secrets", "cat", "v:never", env=env).returncode == 33
    assert run_pk("secrets", "cat", "v:clip", env=env).stdout == CLIP_VALUE


def test_otp_of_an_entry_folder_reads_its_otp(env: dict[str, str]) -> None:
    for address in ("v:entry", "v:otp-only"):
        result = pk(env, "otp", address)
        assert result.returncode == 0, result.stderr
        assert result.stdout[:6].isdigit() and len(result.stdout) == 7


def test_clip_copies_one_secret_only(env: dict[str, str], display: str, tmp_path: Path) -> None:
    code, out, err = clip(env, display, tmp_path, "v:clip", "v:otp", "--clip")
    assert code == 2 and out == b""
    assert err.startswith(b"pk: error: Invalid usage: --clip copies one secret")


def test_clip_returns_to_a_caller_that_reads_its_output_through_pipes(
    env: dict[str, str], display: str
) -> None:
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "polykey",
                "secrets",
                "cat",
                "v:clip",
                "--clip",
                "--clear-after",
                "0",
            ],
            env={**env, "DISPLAY": display},
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    finally:
        copy_as_user(display, b"released")  # end the xclip that holds the pipe
    assert result.returncode == 0


# --- pk completion --------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(shell: str, tmp_path: Path) -> None:
    result = run_pk("completion", shell)
    assert result.returncode == 0 and result.stderr == b""
    script = result.stdout.decode()
    assert "_PK_COMPLETE" in script
    assert f"{shell}_complete" in script
    if shutil.which(shell) is not None:  # the shell itself accepts the script
        path = tmp_path / f"pk.{shell}"
        path.write_text(script)
        syntax = ["fish", "--no-execute"] if shell == "fish" else [shell, "-n"]
        assert subprocess.run([*syntax, str(path)], check=False).returncode == 0


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    assert run_pk("completion", "tcsh").returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_subcommands(tmp_path: Path) -> None:
    script = tmp_path / "pk.bash"
    script.write_bytes(run_pk("completion", "bash").stdout)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    pk_bin = tmp_path / "bin"
    pk_bin.mkdir()
    (pk_bin / "pk").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m polykey "$@"\n')
    (pk_bin / "pk").chmod(0o755)

    def complete(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in words)
        shown = subprocess.run(
            [
                "bash",
                "-c",
                f'source "{script}"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
                '_pk_completion pk; printf "%s\\n" "${COMPREPLY[@]}"',
            ],
            env={**os.environ, "PATH": f"{pk_bin}:{os.environ['PATH']}"},
            capture_output=True,
            check=True,
            timeout=60,
        )
        return shown.stdout.decode().split()

    assert complete("pk", "ag") == ["agent"]
    assert complete("pk", "agent", "lo") == ["lock", "lockall"]
    assert "env" in complete("pk", "secrets", "e")
    assert {"otp", "read", "run", "inject", "completion"} <= set(complete("pk", ""))
