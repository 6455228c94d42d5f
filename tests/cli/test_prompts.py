"""Prompts on a real terminal: `pk` run on a pseudo-terminal, typing as a user would.

Each run has a deadline; a prompt that never comes, or a process that never ends, fails the test
instead of hanging it.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.helpers import CliNode
from tests.support import PASSWORD, pk_env, run_pk

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")

TYPED = "typed at the prompt 7"
DEADLINE_S = 30.0


@dataclass
class Session:
    exit_code: int
    screen: str
    unanswered: list[str]


def drive(args: list[str], env: dict[str, str], dialogue: list[tuple[str, str]]) -> Session:
    """Run `pk ARGS` on a pseudo-terminal; on each prompt of ``dialogue`` (in order), type its
    answer. Returns the exit code, everything the terminal showed, and prompts never seen."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        try:
            os.execve(sys.executable, [sys.executable, "-m", "polykey", *args], env)
        finally:
            os._exit(127)
    screen = bytearray()
    seen_up_to = 0
    pending = [(prompt.encode(), answer.encode()) for prompt, answer in dialogue]
    deadline = time.monotonic() + DEADLINE_S
    finished = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"pk did not finish in {DEADLINE_S} s: {bytes(screen)!r}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            screen += chunk
            while pending:
                prompt, answer = pending[0]
                at = screen.find(prompt, seen_up_to)
                if at < 0:
                    break
                seen_up_to = at + len(prompt)
                if answer[:1] in (b"\x03", b"\x04"):
                    # A key that signals, pressed as a person would, not in the microseconds
                    # between getpass writing its prompt and blocking in read(): a SIGINT that
                    # lands there is only seen at the next byte (CPython checks signals on
                    # EINTR), which a loaded machine made the test wait for in vain.
                    time.sleep(0.3)
                os.write(fd, answer)
                pending.pop(0)
        _, status = os.waitpid(pid, 0)
        finished = True
    finally:
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return Session(
        exit_code=os.waitstatus_to_exitcode(status),
        screen=screen.decode("utf-8", errors="replace"),
        unanswered=[prompt.decode() for prompt, _ in pending],
    )


def assert_never_echoed(session: Session, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in session.screen, f"{secret!r} was shown on the terminal"
    assert "Traceback" not in session.screen


def opens_with(path: Path, password: str) -> bool:
    return run_pk("keys", "public", env=pk_env(path, PK_PASSWORD=password)).returncode == 0


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_asks_for_the_new_password_twice_without_echo(node_path: Path) -> None:
    session = drive(
        ["bootstrap"],
        pk_env(node_path),
        [("New password: ", TYPED + "\n"), ("New password (again): ", TYPED + "\n")],
    )
    assert session.exit_code == 0, session.screen
    assert session.unanswered == []
    assert_never_echoed(session, TYPED)
    assert "Created node v" in session.screen
    assert "Recovery code:" in session.screen
    assert opens_with(node_path, TYPED)


def test_bootstrap_with_two_different_passwords_exits_3_and_creates_no_node(
    node_path: Path,
) -> None:
    session = drive(
        ["bootstrap"],
        pk_env(node_path),
        [("New password: ", TYPED + "\n"), ("New password (again): ", "something else\n")],
    )
    assert session.exit_code == 3, session.screen
    assert session.unanswered == []
    assert "pk: error: The two passwords differ" in session.screen
    assert "pk: hint: " in session.screen
    assert_never_echoed(session, TYPED, "something else")
    assert not node_path.exists()


def test_bootstrap_refuses_an_empty_password_typed_at_the_prompt(node_path: Path) -> None:
    session = drive(["bootstrap"], pk_env(node_path), [("New password: ", "\n")])
    assert session.exit_code == 3, session.screen
    assert "pk: error: The password is empty" in session.screen
    assert not node_path.exists()


# --- commands that unlock the node --------------------------------------------------------------


def test_node_info_asks_for_the_password_when_none_is_given(cli_node: CliNode) -> None:
    session = drive(
        ["node", "info", "--format", "json"],
        pk_env(cli_node.path),
        [("Password: ", PASSWORD + "\n")],
    )
    assert session.exit_code == 0, session.screen
    assert cli_node.node_id in session.screen
    assert_never_echoed(session, PASSWORD)


def test_a_wrong_password_typed_at_the_prompt_exits_12(cli_node: CliNode) -> None:
    session = drive(["node", "info"], pk_env(cli_node.path), [("Password: ", "wrong one\n")])
    assert session.exit_code == 12, session.screen
    assert "pk: error: Wrong password" in session.screen
    assert_never_echoed(session, "wrong one")


def test_keys_password_asks_the_old_password_then_the_new_one_twice(cli_node: CliNode) -> None:
    session = drive(
        ["keys", "password"],
        pk_env(cli_node.path),
        [
            ("Password: ", PASSWORD + "\n"),
            ("New password: ", TYPED + "\n"),
            ("New password (again): ", TYPED + "\n"),
        ],
    )
    assert session.exit_code == 0, session.screen
    assert session.unanswered == []
    assert "Password changed." in session.screen
    assert_never_echoed(session, PASSWORD, TYPED)
    assert opens_with(cli_node.path, TYPED)
    assert not opens_with(cli_node.path, PASSWORD)


def test_keys_password_with_a_mismatched_new_password_keeps_the_old_one(
    cli_node: CliNode,
) -> None:
    session = drive(
        ["keys", "password"],
        pk_env(cli_node.path),
        [
            ("Password: ", PASSWORD + "\n"),
            ("New password: ", TYPED + "\n"),
            ("New password (again): ", TYPED + "x\n"),
        ],
    )
    assert session.exit_code == 3, session.screen
    assert "pk: error: The two passwords differ" in session.screen
    assert opens_with(cli_node.path, PASSWORD)


def test_keys_recover_asks_for_the_code_hidden_and_a_new_password_twice(
    cli_node: CliNode,
) -> None:
    session = drive(
        ["keys", "recover"],
        pk_env(cli_node.path),
        [
            ("Recovery code: ", cli_node.code + "\n"),
            ("New password: ", TYPED + "\n"),
            ("New password (again): ", TYPED + "\n"),
        ],
    )
    assert session.exit_code == 0, session.screen
    assert f"New password set for {cli_node.node_id}." in session.screen
    assert_never_echoed(session, cli_node.code, TYPED)
    assert opens_with(cli_node.path, TYPED)


# --- leaving a prompt ---------------------------------------------------------------------------


def test_ctrl_c_at_a_prompt_exits_130_without_a_traceback(cli_node: CliNode) -> None:
    session = drive(["node", "info"], pk_env(cli_node.path), [("Password: ", "\x03")])
    assert session.exit_code == 130, session.screen
    assert "pk: error: Interrupted" in session.screen
    assert "Traceback" not in session.screen


def test_ctrl_d_at_a_prompt_exits_130_as_documented(cli_node: CliNode) -> None:
    session = drive(["node", "info"], pk_env(cli_node.path), [("Password: ", "\x04")])
    assert session.exit_code == 130, session.screen
    assert "pk: error: Interrupted" in session.screen


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("hunter2", "7 characters, fewer than 12"),
        ("aaaaaaaaaaaaaaaa", "it repeats a few characters"),
        ("1234567890123", "digits only"),
        ("correct horse battery staple", None),
    ],
)
def test_a_weak_new_password_is_taken_with_a_warning(
    tmp_path: Path, password: str, why: str | None
) -> None:
    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=password)
    env.pop("PK_UNSAFE_FAST_KDF")  # the real key derivation: the warning is for real nodes
    done = run_pk("bootstrap", env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert password.encode() not in done.stderr
    if why is None:
        assert b"weak" not in done.stderr
    else:
        assert f"pk: warning: this password is weak ({why})".encode() in done.stderr
