"""Shell completion of vault names and secret paths (`pk completion bash|zsh|fish`).

Real processes throughout: a real agent serves a node; `pk` answers the scripts' calls; and real
bash, zsh and fish (the last two where installed) run the scripts in a terminal, with keys typed
and TAB pressed, while a stand-in `pk` on their PATH prints the arguments it finally receives.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from polykey.cli import completion
from tests.cli.helpers import CliNode
from tests.support import PASSWORD, pk_env, run_pk

SECRETS = [
    "work:db/password",
    "work:db/user",
    "work:my file",
    "work:my dir/x",
    "work:a'b",
    "work:$HOME",
    "work:été",
    "wiki:start",
    "personal:email/gmail/password",
]


@pytest.fixture(scope="module")
def agent_env(
    template_node: CliNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A node with three vaults, served by an agent; the environment has no password."""
    node = tmp_path_factory.mktemp("completion") / "node.pk"
    shutil.copyfile(template_node.path, node)
    base = Path(tempfile.mkdtemp(prefix="pkc-", dir="/tmp"))
    env = pk_env(node, PK_RUNTIME_DIR=str(base))
    with_password = {**env, "PK_PASSWORD": PASSWORD}
    for vault in ("work", "wiki", "personal"):
        assert run_pk("vaults", "create", vault, env=with_password).returncode == 0
    for address in SECRETS:
        assert run_pk("secrets", "write", address, env=with_password, input=b"v").returncode == 0
    started = run_pk("agent", "start", "--background", env=with_password)
    assert started.returncode == 0, started.stderr
    status = json.loads(next(base.glob("*/status.json")).read_text())
    try:
        yield env
    finally:
        run_pk("agent", "stop", env=env)
        with contextlib.suppress(ProcessLookupError):
            os.kill(status["pid"], 9)
        shutil.rmtree(base, ignore_errors=True)


def answer(env: dict[str, str], shell: str, *words: str, **extra: str) -> list[str]:
    """What `pk` tells a completion script for ``words`` (the last one being completed)."""
    result = run_pk(*words, env={**env, "_PK_COMPLETE": f"{shell}_complete", **extra}, input=b"")
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    return result.stdout.decode().split("\n")[:-1]


def bash(env: dict[str, str], *words: str) -> tuple[str, list[str]]:
    """bash's answer: what to do (nospace, file, dir or nothing), then the completions."""
    lines = answer(env, "bash", *words)
    return lines[0], lines[1:]


# --- what `pk` answers ----------------------------------------------------------------------------


def test_vault_names_come_with_a_colon_and_no_space_after_one(agent_env: dict[str, str]) -> None:
    assert bash(agent_env, "secrets", "cat", "") == ("", ["personal:", "wiki:", "work:"])
    assert bash(agent_env, "secrets", "cat", "w") == ("", ["wiki:", "work:"])
    assert bash(agent_env, "secrets", "cat", "wo") == ("nospace", ["work:"])
    assert bash(agent_env, "otp", "pers") == ("nospace", ["personal:"])
    assert bash(agent_env, "secrets", "cat", "nothing") == ("", [])


def test_paths_complete_folder_by_folder_after_the_colon(agent_env: dict[str, str]) -> None:
    """bash replaces what follows the ':' (COMP_WORDBREAKS): the answer is that part, escaped."""
    assert bash(agent_env, "secrets", "cat", "work:") == (
        "",
        ["\\$HOME", "a\\'b", "db/", "my\\ dir/", "my\\ file", "été"],
    )
    assert bash(agent_env, "secrets", "cat", "work:d") == ("nospace", ["db/"])
    assert bash(agent_env, "secrets", "cat", "work:db/") == ("", ["db/password", "db/user"])
    assert bash(agent_env, "secrets", "cat", "work:db/p") == ("", ["db/password"])
    assert bash(agent_env, "secrets", "ls", "personal:email/") == ("nospace", ["email/gmail/"])
    assert bash(agent_env, "secrets", "cat", "work:nosuch/") == ("", [])
    assert bash(agent_env, "secrets", "cat", "nosuch:") == ("", [])


def test_bash_keeps_what_was_typed_and_escapes_the_rest(agent_env: dict[str, str]) -> None:
    assert bash(agent_env, "secrets", "cat", "work:my\\ f") == ("", ["my\\ file"])
    assert bash(agent_env, "secrets", "cat", "'work:my f") == ("", ["work:my file"])
    assert bash(agent_env, "secrets", "cat", '"work:\\$') == ("", ["work:\\$HOME"])
    assert bash(agent_env, "secrets", "cat", "'work:a") == ("", [])  # no way to close the quote
    assert bash(agent_env, "secrets", "cat", "work:\\$") == ("", ["\\$HOME"])


def test_zsh_and_fish_get_the_whole_word_unescaped(agent_env: dict[str, str]) -> None:
    for shell in ("zsh", "fish"):
        assert answer(agent_env, shell, "secrets", "cat", "work:my") == [
            "part\twork:my dir/\t",
            "plain\twork:my file\t",
        ]
        assert answer(agent_env, shell, "secrets", "rm", "-r", "w") == [
            "part\twiki:\t",
            "part\twork:\t",
        ]


def test_secret_references_complete_in_pk_urls(agent_env: dict[str, str]) -> None:
    assert bash(agent_env, "read", "") == ("", ["pk://personal/", "pk://wiki/", "pk://work/"])
    assert bash(agent_env, "read", "p") == ("", ["pk://personal/", "pk://wiki/", "pk://work/"])
    assert bash(agent_env, "read", "pk://wo") == ("nospace", ["//work/"])
    assert answer(agent_env, "zsh", "read", "pk://work/") == [  # a space is written %20
        "plain\tpk://work/$HOME\t",
        "plain\tpk://work/a'b\t",
        "part\tpk://work/db/\t",
        "part\tpk://work/my%20dir/\t",
        "plain\tpk://work/my%20file\t",
        "plain\tpk://work/été\t",
    ]
    assert answer(agent_env, "zsh", "read", "pk://work/my%20d") == ["part\tpk://work/my%20dir/\t"]
    assert answer(agent_env, "zsh", "read", "pk://work/my%20dir/") == [
        "plain\tpk://work/my%20dir/x\t"
    ]
    assert answer(agent_env, "fish", "inject", "pk://work/db/u") == ["plain\tpk://work/db/user\t"]


def test_each_argument_that_names_a_vault_or_a_secret_completes_and_no_other(
    agent_env: dict[str, str],
) -> None:
    assert bash(agent_env, "vaults", "log", "w") == ("", ["wiki", "work"])
    assert bash(agent_env, "vaults", "unshare", "wo") == ("", ["work"])
    assert bash(agent_env, "vaults", "share", "wo") == ("nospace", ["work:"])  # VAULT[:PATH]
    assert bash(agent_env, "vaults", "share", "work", "") == ("", [])  # a NodeId
    assert bash(agent_env, "secrets", "mv", "work:db/user", "work:d") == ("nospace", ["db/"])
    assert bash(agent_env, "secrets", "write", "work:db/user", "") == ("", [])
    assert bash(agent_env, "secrets", "create", "") == ("file", [])  # a local file first
    assert bash(agent_env, "secrets", "create", "f.txt", "wo") == ("nospace", ["work:"])
    assert bash(agent_env, "tags", "add", "work:db/user", "") == ("", [])  # tags
    assert bash(agent_env, "secrets", "cat", "--rev", "") == ("", [])  # a revision
    assert bash(agent_env, "--kdf-max-iterations", "4", "secrets", "cat", "wo") == (
        "nospace",
        ["work:"],
    )
    assert bash(agent_env, "secrets", "env", "work:db", "--", "wo") == ("", [])  # a command
    assert bash(agent_env, "secrets", "env", "work:db/user=U") == ("", [])


def test_commands_options_and_choices_come_from_click(agent_env: dict[str, str]) -> None:
    assert bash(agent_env, "se") == ("", ["secrets"])
    assert bash(agent_env, "secrets", "ca") == ("", ["cat"])
    assert "--rev" in bash(agent_env, "secrets", "cat", "--r")[1]
    assert bash(agent_env, "secrets", "cat", "--format", "") == ("", ["human", "json"])
    assert bash(agent_env, "secrets", "cat", "--node", "") == ("file", [])
    zsh = answer(agent_env, "zsh", "vaults", "sig")
    assert len(zsh) == 1 and zsh[0].startswith("plain\tsigners\tgit's allowed-signers lines")


def test_without_an_agent_nothing_is_offered_and_nothing_asked(
    agent_env: dict[str, str], tmp_path: Path
) -> None:
    """Never a prompt, never the node file: with no agent, no session, or PK_NO_AGENT=1."""
    elsewhere = {**agent_env, "PK_RUNTIME_DIR": str(tmp_path)}
    assert bash(elsewhere, "secrets", "cat", "wo") == ("", [])
    assert bash({**agent_env, "PK_NO_AGENT": "1"}, "secrets", "cat", "wo") == ("", [])
    assert bash({**agent_env, "PK_TOKEN": "pk1.invalid"}, "secrets", "cat", "wo") == ("", [])
    missing = {**agent_env, "PK_NODE": str(tmp_path / "no-such-node.pk")}
    assert bash(missing, "secrets", "cat", "work:") == ("", [])
    named = ("secrets", "cat", "--node", str(tmp_path / "other.pk"), "wo")
    assert bash(agent_env, *named) == ("", [])  # --node names another node: not this agent's
    assert bash(agent_env, "secrets", "cat", f"--node={agent_env['PK_NODE']}", "wo") == (
        "nospace",
        ["work:"],
    )


def test_the_default_node_is_the_one_the_cli_uses(
    agent_env: dict[str, str], tmp_path: Path
) -> None:
    """No PK_NODE: the platform data directory's node, as `pk` itself finds it."""
    env = {k: v for k, v in agent_env.items() if k != "PK_NODE"}
    home = tmp_path / "home"
    code = (
        "from polykey.cli.common import Settings; from polykey.cli.completion import _default_node;"
        "print(Settings(None, None, 'human').node_path()); print(_default_node())"
    )
    for xdg in (None, str(tmp_path / "data"), "relative/data"):
        run_env = {**env, "HOME": str(home)}
        run_env.pop("XDG_DATA_HOME", None)
        if xdg is not None:
            run_env["XDG_DATA_HOME"] = xdg
        out = subprocess.run(
            [sys.executable, "-c", code], env=run_env, capture_output=True, check=True, text=True
        ).stdout.split("\n")
        assert out[0] == out[1], xdg


def test_an_older_script_of_clicks_own_is_still_answered(agent_env: dict[str, str]) -> None:
    env = {**agent_env, "_PK_COMPLETE": "bash_complete", "COMP_WORDS": "pk se", "COMP_CWORD": "1"}
    result = run_pk(env=env)
    assert result.returncode == 0 and result.stdout.decode().split() == ["plain,secrets"]


def test_answering_a_path_loads_no_click_no_json_no_node_code(agent_env: dict[str, str]) -> None:
    code = """
import sys
before = set(sys.modules)
from polykey.cli.completion import complete
complete(["secrets", "cat", "work:db/"])
print(" ".join(sorted(set(sys.modules) - before)), file=sys.stderr)
"""
    env = {**agent_env, "_PK_COMPLETE": "bash_complete"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert result.stdout == b"\ndb/password\ndb/user\n"
    loaded = set(result.stderr.decode().split())
    heavy = {"click", "json", "typing", "pathlib", "subprocess", "platformdirs", "hashlib", "re"}
    assert not loaded & heavy, loaded & heavy
    assert not any(m.startswith(("polykey.agent", "polykey.node", "polykey.store")) for m in loaded)


def test_the_table_of_arguments_matches_the_commands() -> None:
    """completion.COMPLETED says which arguments name vaults or secrets, and which options take
    a value; derived again here from the commands themselves."""
    from polykey.cli.app import cli

    ctx = click.Context(cli)
    found: dict[str, tuple[str, frozenset[str]]] = {}

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
            return
        key = " ".join(path)
        letters = ""
        for param in command.params:
            if not isinstance(param, click.Argument):
                continue
            meta = param.human_readable_name
            if meta.startswith("pk://"):
                letter = "r"
            elif "VAULT:" in meta or "VAULT[:" in meta or key in ("secrets mv", "secrets cp"):
                letter = "a"
            elif meta in ("NAME", "OLD", "VAULT") and path[0] in ("vaults", "export"):
                letter = "-" if key in ("vaults create", "vaults clone") else "v"
            else:
                letter = "-"
            letters += letter + ("*" if param.nargs == -1 else "")
        if set(letters) - {"-", "*"}:
            values = {
                name
                for p in command.params
                if isinstance(p, click.Option) and not p.is_flag and not p.count
                for name in p.opts + p.secondary_opts
            }
            found[key] = (letters, frozenset(values - completion.COMMON_VALUE_OPTIONS))

    walk(cli, [])
    assert found == completion.COMPLETED
    roots = {n for p in cli.params if isinstance(p, click.Option) and not p.is_flag for n in p.opts}
    assert roots == completion.ROOT_VALUE_OPTIONS


# --- the scripts, in the shells themselves --------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_is_valid_for_its_shell(shell: str, tmp_path: Path) -> None:
    script = run_pk("completion", shell)
    assert script.returncode == 0 and script.stdout.startswith(b"#")
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"pk.{shell}"
    path.write_bytes(script.stdout)
    check = ["fish", "--no-execute", str(path)] if shell == "fish" else [shell, "-n", str(path)]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0


class Terminal:
    """A shell in a pseudo-terminal with the completion script loaded, and a stand-in `pk`
    that prints its arguments (and answers completion as the real one)."""

    PROMPT = "PKREADY> "

    def __init__(self, shell: str, env: dict[str, str], tmp: Path) -> None:
        if shutil.which(shell) is None:
            pytest.skip(f"{shell} is not installed")
        bin_dir = tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        pk = bin_dir / "pk"
        pk.write_text(
            "#!/bin/sh\n"
            f'if [ -n "$_PK_COMPLETE" ]; then exec "{sys.executable}" -m polykey "$@"; fi\n'
            f'exec "{sys.executable}" -c '
            '\'import json, sys; print("ARGV" + json.dumps(sys.argv[1:]))\' "$@"\n'
        )
        pk.chmod(0o755)
        script = tmp / f"pk.{shell}"
        script.write_bytes(run_pk("completion", shell, env=env).stdout)
        home = tmp / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            **env,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(home),
            "TERM": "dumb",
            "INPUTRC": "/dev/null",
        }
        command, setup = {
            "bash": (["bash", "--norc", "--noprofile", "-i"], f"PS1='{self.PROMPT}'; . {script}"),
            "zsh": (
                ["zsh", "-f", "-i"],
                f"PS1='{self.PROMPT}'; autoload -Uz compinit && compinit -u; . {script}",
            ),
            "fish": (
                ["fish", "--no-config", "-i"],
                f"function fish_prompt; echo -n '{self.PROMPT}'; end; source {script}",
            ),
        }[shell]
        self.command, self.setup = command, setup

    def typed(self, *keys: str) -> list[str]:
        """Start the shell, type ``keys`` (each pressed in turn; a TAB completes), press Enter:
        the arguments `pk` received."""
        pid, fd = pty.fork()
        if pid == 0:  # the child: the shell
            os.execvpe(self.command[0], self.command, self.env)
        out = bytearray()
        try:
            self._read(fd, out, lambda: False, 1.0)
            os.write(fd, self.setup.encode() + b"\r")
            self._read(fd, out, lambda: out.count(self.PROMPT.encode()) >= 1, 60)
            for key in keys:
                os.write(fd, key.encode())
                self._read(fd, out, lambda: False, 0.3, quiet=True)
            os.write(fd, b"\r")
            found = self._read(fd, out, lambda: re.search(rb"ARGV(\[.*?\])\r?\n", out), 60)
            assert found, bytes(out[-2000:])
            match = re.search(rb"ARGV(\[.*?\])\r?\n", out)
            assert match is not None
            return list(json.loads(match[1]))
        finally:
            with contextlib.suppress(OSError):
                os.write(fd, b"exit\r")
            time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(fd)

    @staticmethod
    def _read(
        fd: int, out: bytearray, done: object, timeout: float, *, quiet: bool = False
    ) -> bool:
        """Read what the shell writes until ``done()`` or ``timeout``; with ``quiet``, until it
        has written nothing for ``timeout`` seconds (a completion has run), 30 s at most."""
        assert callable(done)
        deadline = time.monotonic() + (30 if quiet else timeout)
        last = time.monotonic()
        while time.monotonic() < deadline:
            if done():
                return True
            if quiet and time.monotonic() - last > timeout:
                return False
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return bool(done())
                if not data:
                    return bool(done())
                out += data
                last = time.monotonic()
        return bool(done())


SHELLS = ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", SHELLS)
def test_tab_completes_a_vault_then_folder_by_folder(
    shell: str, agent_env: dict[str, str], tmp_path: Path
) -> None:
    term = Terminal(shell, agent_env, tmp_path)
    assert term.typed("pk secrets cat wo\t", "db/p\t") == ["secrets", "cat", "work:db/password"]
    assert term.typed("pk se\t", "ca\t", "pers\t", "e\t", "g\t", "p\t") == [
        "secrets",
        "cat",
        "personal:email/gmail/password",
    ]
    assert term.typed("pk read pk://wo\t", "db/u\t") == ["read", "pk://work/db/user"]


@pytest.mark.parametrize("shell", SHELLS)
def test_tab_escapes_spaces_quotes_and_dollars(
    shell: str, agent_env: dict[str, str], tmp_path: Path
) -> None:
    term = Terminal(shell, agent_env, tmp_path)
    assert term.typed("pk secrets cat work:my\\ f\t") == ["secrets", "cat", "work:my file"]
    assert term.typed("pk secrets cat work:my\\ d\t", "\t") == ["secrets", "cat", "work:my dir/x"]
    assert term.typed("pk secrets cat work:a\t") == ["secrets", "cat", "work:a'b"]
    assert term.typed("pk secrets cat work:\\$\t") == ["secrets", "cat", "work:$HOME"]
    assert term.typed("pk secrets cat work:é\t") == ["secrets", "cat", "work:été"]
    if shell != "fish":  # fish has no open quote to complete in the same way
        assert term.typed("pk secrets cat 'work:my f\t") == ["secrets", "cat", "work:my file"]


@pytest.mark.parametrize("shell", SHELLS)
def test_tab_without_an_agent_leaves_the_word_as_typed(
    shell: str, agent_env: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = {**agent_env, "PK_RUNTIME_DIR": str(tmp_path / "run")}
    term = Terminal(shell, elsewhere, tmp_path)
    assert term.typed("pk secrets cat wo\t") == ["secrets", "cat", "wo"]
    assert term.typed("pk secr\t", "ca\t") == ["secrets", "cat"]  # commands still complete


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_joins_the_words_it_split_at_the_colon(
    agent_env: dict[str, str], tmp_path: Path
) -> None:
    """The script's own word handling, with COMP_WORDS as bash makes them (split at ':')."""
    script = tmp_path / "pk.bash"
    script.write_bytes(run_pk("completion", "bash").stdout)
    pk = tmp_path / "pk"
    pk.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m polykey "$@"\n')
    pk.chmod(0o755)

    def complete(line: str, words: list[str]) -> list[str]:
        quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
        setup = (
            f"COMP_LINE='{line}'; COMP_POINT={len(line)}; COMP_WORDS=({quoted}); "
            f"COMP_CWORD={len(words) - 1}"
        )
        shown = subprocess.run(
            [
                "bash",
                "--norc",
                "-c",
                f'. "{script}"; {setup}; _pk_completion "{pk}"; printf "%s\\n" "${{COMPREPLY[@]}}"',
            ],
            env=agent_env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return shown.stdout.decode().splitlines()

    words = ["pk", "secrets", "cat", "work", ":", "db/"]
    assert complete("pk secrets cat work:db/", words) == ["db/password", "db/user"]
    after_colon = complete("pk secrets cat work:", words[:5])  # bash's word is the ':'
    assert after_colon[:3] == ["\\$HOME", "a\\'b", "db/"]
    assert complete("pk  secrets   cat work:d", ["pk", "secrets", "cat", "work", ":", "d"]) == [
        "db/"
    ]
    assert complete("pk read pk://work/db/u", ["pk", "read", "pk", ":", "//work/db/u"]) == [
        "//work/db/user"
    ]
