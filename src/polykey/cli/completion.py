"""`pk completion bash|zsh|fish`: the shell scripts, and the completion of commands and options.

A script calls ``pk`` back with ``_PK_COMPLETE=<shell>_complete`` in its environment and the words
of the command line (after the program's name, up to the cursor) as arguments. polykey.cli.main
hands that call to :func:`complete` before click is imported: vault names and secret paths
(``VAULT:PATH``, ``pk://VAULT/PATH``) come from the running agent, and nothing at all when no agent
runs (completion never asks for a password nor opens the node file). Only the names of commands
and options, and their choices, come from click, through :func:`command_items`. This module
imports nothing else at its top (the click command is made on first use).

For zsh and fish each line of the answer is ``kind<TAB>value<TAB>help`` (they escape what they
insert); the kinds: ``plain``; ``part``, a vault or folder to go on with (no space after it);
``file`` and ``dir``, for the shell's own completion of local files. For bash, so that its script
stays a few array operations even for thousands of paths, the first line says what to do
(``nospace``, ``file``, ``dir`` or nothing) and each further line is a completion, ready to insert
(escaped: the script quotes nothing itself).

Bash splits words at the characters of ``COMP_WORDBREAKS`` (the ':' of ``VAULT:PATH``): its script
joins the words again from ``COMP_LINE`` and passes ``COMP_WORDBREAKS`` on, so that the answer
replaces only what bash itself will replace. An older script (click's: ``COMP_WORDS`` in the
environment, no arguments) is still answered by click.
"""

from __future__ import annotations

import os
import sys

from polykey.cli.fast import _agent, _exchange, _json_text, _request

TYPE_CHECKING = False  # no `typing` import on the way to an answer (mypy reads it as True)
if TYPE_CHECKING:
    import click

ROOT_VALUE_OPTIONS = frozenset(
    {"--kdf-max-memory", "--kdf-max-iterations", "--format", "--node", "--password-file"}
)
COMMON_VALUE_OPTIONS = frozenset({"--format", "--node", "--password-file"})

COMPLETED: dict[str, tuple[str, frozenset[str]]] = {
    # A command whose arguments name vaults or secrets: one letter per positional argument
    # (a: VAULT:PATH, v: a vault of this node, r: pk://VAULT/PATH, -: something else; a final
    # * repeats the letter before it), and its options that take a value beyond the common ones.
    # tests/cli/test_completion.py checks this against the commands themselves.
    "secrets cat": ("a*", frozenset({"--rev", "--clear-after"})),
    "secrets cp": ("aa", frozenset()),
    "secrets create": ("-a", frozenset()),
    "secrets dir": ("-a", frozenset()),
    "secrets edit": ("a", frozenset()),
    "secrets env": ("a*", frozenset({"--duplicate", "--invalid"})),
    "secrets generate": ("a-", frozenset({"--charset", "--clear-after", "--length", "--words"})),
    "secrets history": ("a", frozenset()),
    "secrets ls": ("a", frozenset({"--tag"})),
    "secrets mkdir": ("a", frozenset()),
    "secrets mv": ("aa", frozenset()),
    "secrets rm": ("a*", frozenset()),
    "secrets stat": ("a", frozenset()),
    "secrets write": ("a", frozenset()),
    "tags add": ("a-*", frozenset()),
    "tags rm": ("a-*", frozenset()),
    "otp": ("a", frozenset()),
    "read": ("r", frozenset()),
    "export dotenv": ("a", frozenset({"--to"})),
    "export json": ("a", frozenset({"--to"})),
    "export pass": ("a", frozenset({"--to", "--gpg-recipient"})),
    "export keepass": ("a-", frozenset({"--keyfile", "--target-password-file"})),
    "export git": ("v-", frozenset()),
    "vaults conflicts": ("v", frozenset()),
    "vaults diff": ("v--", frozenset()),
    "vaults log": ("v", frozenset({"--path", "-n"})),
    "vaults permissions": ("v", frozenset()),
    "vaults pull": ("v", frozenset()),
    "vaults push": ("v-", frozenset()),
    "vaults rename": ("v-", frozenset()),
    "vaults resolve": ("a", frozenset({"--keep"})),
    "vaults revert": ("v-", frozenset()),
    "vaults rm": ("v", frozenset()),
    "vaults share": ("a-", frozenset({"--perm"})),
    "vaults show": ("v-", frozenset()),
    "vaults signers": ("v", frozenset({"--from"})),
    "vaults sync": ("v", frozenset({"--with"})),
    "vaults tag": ("v-", frozenset()),
    "vaults unshare": ("v-", frozenset()),
    "vaults undo": ("v-", frozenset()),
    "vaults untag": ("v-", frozenset()),
}

Item = tuple[str, str, str]
"""A completion: its kind (plain; part: a vault or folder, to be continued, so no space after
it; file; dir), its value and a help text."""


def complete(args: list[str]) -> int:
    """Answer a completion script: ``_PK_COMPLETE=<shell>_complete pk WORD...``, the words after
    the program's name up to the cursor, the last one being completed (bash passes them as
    typed, quotes and all, and its COMP_WORDBREAKS in ``_PK_COMPLETE_BREAKS``). Writes one
    completion a line, ``kind<TAB>value`` for bash (the value ready to insert, escaped), and
    ``kind<TAB>value<TAB>help`` for zsh and fish (the shell escapes)."""
    shell = os.environ.get("_PK_COMPLETE", "").partition("_")[0]
    try:
        raw = args[-1]
        words = [_dequote(a)[0] for a in args] if shell == "bash" else list(args)
        kind, node = _position(words)
        if kind in ("a", "v", "r"):
            items = _addresses(kind, words[-1], node)
        else:  # commands, options and their choices: click knows them
            items = command_items(words)
        breaks = os.environ.get("_PK_COMPLETE_BREAKS", _WORDBREAKS)
        sys.stdout.write(_format(shell, items, words[-1], raw, _bash_word(raw, breaks)))
        sys.stdout.flush()
    except Exception:  # a completion offers nothing rather than break the shell
        return 0
    return 0


def _position(words: list[str]) -> tuple[str | None, str | None]:
    """What the last word is (a letter of COMPLETED, or None: a command or an option) and the
    node file named by --node among the words, if any."""
    cur = words[-1]
    node: str | None = None
    values = ROOT_VALUE_OPTIONS | COMMON_VALUE_OPTIONS
    positional: list[str] = []
    command: str | None = None
    spec, start = "", 0
    expect = ""  # the option whose value the next word is
    for word in words[:-1]:
        if expect:
            if expect == "--node":
                node = word
            expect = ""
            continue
        if word == "--":  # what follows is another program's
            return None, node
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            if name == "--node" and eq:
                node = value
            if not eq and name in values:
                expect = name
            continue
        positional.append(word)
        if command is None:
            key = " ".join(positional)
            if key in COMPLETED:
                command = key
                spec, extra = COMPLETED[key]
                values = COMMON_VALUE_OPTIONS | extra
                start = len(positional)
    if expect:
        return None, node
    if cur.startswith("pk://"):
        return "r", node
    if command is None or cur.startswith("-"):
        return None, node
    letters, index = spec.rstrip("*"), len(positional) - start
    if index < len(letters):
        return letters[index], node
    return (letters[-1] if spec.endswith("*") else None), node


def _addresses(kind: str, cur: str, node: str | None) -> list[Item]:
    """Vault names and secret paths from the agent serving the node; none without an agent."""
    node = node or os.environ.get("PK_NODE") or _default_node()
    agent = _agent(node) if node else None
    if agent is None:
        return []
    if kind == "v":
        return [("plain", name, "") for name in _ask(agent, None, cur)]
    if kind == "a":
        vault, colon, path = cur.partition(":")
        if not colon:
            return [("part", name + ":", "") for name in _ask(agent, None, cur)]
        if "=" in path:  # `secrets env VAULT:PATH=NAME`: the name is the user's
            return []
        return [
            ("part" if p.endswith("/") else "plain", f"{vault}:{p}", "")
            for p in _ask(agent, vault, path)
        ]
    if not cur.startswith("pk://"):  # `pk read p`: the scheme, with each vault
        if not "pk://".startswith(cur):
            return []
        cur = "pk://"
    from urllib.parse import unquote

    vault, slash, path = cur[5:].partition("/")
    if not slash:
        return [("part", f"pk://{_escaped(n)}/", "") for n in _ask(agent, None, unquote(vault))]
    return [
        ("part" if p.endswith("/") else "plain", f"pk://{vault}/{_escaped(p)}", "")
        for p in _ask(agent, unquote(vault), unquote(path))
    ]


def _escaped(name: str) -> str:
    """A name as a pk:// reference writes it: white space, '%' and '}' (which end or escape a
    reference in a template) as %XX of their UTF-8 bytes; the rest as it is."""
    return "".join(
        "".join(f"%{b:02X}" for b in ch.encode()) if ch.isspace() or ch in "%}" else ch
        for ch in name
    )


def _ask(agent: tuple[str, str], vault: str | None, path: str) -> list[str]:
    """The agent's `secrets.complete`: vault names, or the paths of a vault, starting with
    ``path``."""
    import binascii

    sock_path, token = agent
    fields = f'"path":{_json_text(path)},"token":{_json_text(token)}'
    if vault is not None:
        fields = f'"vault":{_json_text(vault)},{fields}'
    try:
        reply = _exchange(sock_path, _request("secrets.complete", f"{{{fields}}}"), timeout=5.0)
    except OSError:
        return []
    if not reply.startswith(b'{"jsonrpc":"2.0","id":1,"result":'):
        return []  # an error (an invalid session, no such vault): nothing to offer
    start = reply.find(b'"$b64":"') + 8
    end = reply.find(b'"', start)
    if start < 8 or end < 0:
        return []
    lines = binascii.a2b_base64(reply[start:end]).decode("utf-8", "replace")
    return [line for line in lines.split("\n") if line]


def _default_node() -> str | None:
    """The platform data directory's node file: polykey.cli.common.Settings.node_path, the same
    (platformdirs' rule; a test checks they agree)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        if sys.platform == "darwin":
            base = os.path.join(home, "Library", "Application Support")
        else:
            base = os.path.join(home, ".local", "share")
    return os.path.join(base, "polykey", "node.pk")


def _format(shell: str, items: list[Item], cur: str, raw: str, word: str) -> str:
    """zsh, fish: ``kind<TAB>value<TAB>help`` lines. bash: a first line saying what bash is to
    do (``nospace``: the one completion is a vault or folder; ``file``, ``dir``: complete local
    files; else empty), then one completion a line, ready to insert."""
    printable = [i for i in items if i[1].isprintable() or not any(c in _CONTROLS for c in i[1])]
    if shell != "bash":
        return "".join(f"{k}\t{v}\t{' '.join(h.split())}\n" for k, v, h in printable)
    kinds = {kind for kind, _, _ in printable}
    if kinds & {"file", "dir"}:
        return "file\n" if "file" in kinds else "dir\n"
    quote_at = _dequote(raw)[1]
    shown = [(k, v) for k, v, _ in printable if v.startswith(cur)]
    single = len(shown) == 1 and shown[0][0] == "part"
    head = "nospace\n" if single else "\n"
    if quote_at < 0 and raw.endswith(word):  # the usual case, at once (a folder may be large)
        n = len(cur)
        rests = "\n".join([v[n:] for _, v in shown]).translate(_ESCAPED)
        if rests.replace("\n", "").isprintable():
            return head + "".join([f"{word}{r}\n" for r in rests.split("\n")]) if shown else head
    replies = [_bash_reply(v, cur, raw, word, quote_at) for _, v in shown]
    return head + "".join(f"{r}\n" for r in replies if r is not None)


_CONTROLS = frozenset(chr(c) for c in [*range(0x20), 0x7F])
"""Never in a path or a vault name, nor in a line of the reply."""

_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:@%+,="
_ESCAPED = {c: "\\" + chr(c) for c in range(0x20, 0x7F) if chr(c) not in _SAFE}
"""What bash must read as the character itself: escaped with a backslash."""


def _bash_reply(value: str, cur: str, raw: str, word: str, quote_at: int) -> str | None:
    """What bash is to put in place of ``word`` (the end of the typed ``raw`` that readline
    replaces, after a ':' or '='): the typed text kept as it is, the rest of ``value`` escaped;
    inside a quote still open (at ``quote_at``), what follows the quote."""
    if not value.startswith(cur):
        return None
    rest = value[len(cur) :]
    if quote_at >= 0:  # inside an open quote, where readline's word begins
        typed = raw[quote_at + 1 :]
        if raw[quote_at] == "'":
            return None if "'" in rest else typed + rest
        return typed + "".join("\\" + c if c in '"\\$`' else c for c in rest)
    if not raw.endswith(word):
        return None
    escaped = rest.translate(_ESCAPED)
    if not escaped.isprintable():  # white space or a control beyond ASCII: no way to type it
        return None
    return word + escaped


_WORDBREAKS = " \t\n\"'><=;|&(:"
"""Bash's COMP_WORDBREAKS by default."""


def _bash_word(raw: str, breaks: str) -> str:
    """The end of ``raw`` that readline replaces: after its last break character (one of
    ``breaks``, not escaped nor quoted; quotes themselves never break a word)."""
    last, quote, i = -1, "", 0
    while i < len(raw):
        c = raw[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c in breaks:
            last = i
        i += 1
    return raw[last + 1 :]


def _dequote(raw: str) -> tuple[str, int]:
    """A word as bash reads it (backslashes, single and double quotes), and where a quote that
    is still open at its end begins (-1: none)."""
    out: list[str] = []
    quote, at, i = "", -1, 0
    while i < len(raw):
        c = raw[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and raw[i + 1 : i + 2] in ('"', "\\", "$", "`"):
                i += 1
                out.append(raw[i])
            elif c == "\\" and raw[i + 1 : i + 2] == "\n":
                i += 1
            else:
                out.append(c)
        elif c == "\\":
            i += 1
            if raw[i : i + 1] not in ("", "\n"):
                out.append(raw[i])
        elif c in "'\"":
            quote, at = c, i
        else:
            out.append(c)
        i += 1
    return "".join(out), (at if quote else -1)


BASH = r"""# pk completion for bash: eval "$(pk completion bash)" in ~/.bashrc
# Vault names and secret paths come from the running agent (pk agent start); without one, none.
_pk_completion() {
    local cword=${COMP_CWORD:-0} i w rest line
    local -a words=()
    if [[ -n ${COMP_LINE+set} && -n ${COMP_POINT+set} ]]; then
        # the words as typed up to the cursor, joined again where bash split them at
        # COMP_WORDBREAKS (the ':' of VAULT:PATH, an '=')
        line=${COMP_LINE:0:COMP_POINT}
        for ((i = 0; i <= cword; i++)); do
            rest=${line#"${line%%[![:space:]]*}"}
            if ((i == cword)); then
                w=$rest
            else
                w=${COMP_WORDS[i]}
                if [[ $rest != "$w"* ]]; then
                    words=("${COMP_WORDS[@]:0:cword+1}")
                    break
                fi
            fi
            if ((i == 0 || ${#words[@]} == 0)) || [[ $rest != "$line" ]]; then
                words+=("$w")
            else
                words[${#words[@]}-1]+=$w
            fi
            line=${rest#"$w"}
        done
    else
        words=("${COMP_WORDS[@]:0:cword+1}")
    fi
    ((${#words[@]} > 1)) || words+=("")
    local -a reply
    mapfile -t reply <<< "$(_PK_COMPLETE=bash_complete _PK_COMPLETE_BREAKS=${COMP_WORDBREAKS-} \
        "${1:-pk}" "${words[@]:1}" 2>/dev/null)"
    case ${reply[0]-} in
        file) compopt -o default 2>/dev/null; COMPREPLY=(); return 0 ;;
        dir) compopt -o dirnames 2>/dev/null; COMPREPLY=(); return 0 ;;
        nospace) compopt -o nospace 2>/dev/null ;;  # a vault or a folder: its path goes on
    esac
    COMPREPLY=("${reply[@]:1}")
    return 0
}
complete -o nosort -F _pk_completion pk polykey
"""

ZSH = r"""#compdef pk polykey
# pk completion for zsh: eval "$(pk completion zsh)" in ~/.zshrc, after compinit
# Vault names and secret paths come from the running agent (pk agent start); without one, none.
_pk_completion() {
    local -a response plain part described
    local line kind value help
    response=("${(@f)$(_PK_COMPLETE=zsh_complete command "${(Q)words[1]}" \
        "${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}" 2>/dev/null)}")
    for line in "${response[@]}"; do
        [[ -n $line ]] || continue
        kind=${line%%$'\t'*}
        line=${line#*$'\t'}
        value=${line%%$'\t'*}
        help=${line#*$'\t'}
        case $kind in
            plain)
                if [[ -n $help ]]; then
                    described+=("${value//:/\\:}:$help")
                else
                    plain+=("$value")
                fi
                ;;
            part) part+=("$value") ;;
            file) _files; return ;;
            dir) _files -/; return ;;
        esac
    done
    (( $#described )) && _describe -t values pk described
    (( $#plain )) && compadd -a plain
    (( $#part )) && compadd -S '' -a part
    return 0
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _pk_completion "$@"
else
    compdef _pk_completion pk polykey
fi
"""

FISH = r"""# pk completion for fish: pk completion fish > ~/.config/fish/completions/pk.fish
# Vault names and secret paths come from the running agent (pk agent start); without one, none.
function __pk_completion
    set -l words (commandline -opc)
    set -l program $words[1]
    set -e words[1]
    set -l cur (commandline -ct | string unescape)
    set -l response (env _PK_COMPLETE=fish_complete $program $words "$cur" 2>/dev/null)
    for line in $response
        set -l field (string split -m 2 \t -- $line)
        switch $field[1]
            case plain part
                if test -n "$field[3]"
                    printf '%s\t%s\n' $field[2] $field[3]
                else
                    printf '%s\n' $field[2]
                end
            case file
                __fish_complete_path "$cur"
            case dir
                __fish_complete_directories "$cur"
        end
    end
end
complete -c pk -f -a '(__pk_completion)'
complete -c polykey -f -a '(__pk_completion)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def command_items(words: list[str]) -> list[Item]:
    """Commands, options and their choices after ``words[:-1]`` that start with ``words[-1]``."""
    from click.shell_completion import ShellComplete

    from polykey.cli.app import cli

    found = ShellComplete(cli, {}, "pk", "_PK_COMPLETE").get_completions(words[:-1], words[-1])
    return [
        (item.type if item.type in ("file", "dir") else "plain", str(item.value), item.help or "")
        for item in found
    ]


def _command() -> click.Command:
    import click

    @click.command()
    @click.argument("shell", type=click.Choice(sorted(SCRIPTS)))
    def completion(shell: str) -> None:
        """Print the shell completion script.

        \b
        bash: eval "$(pk completion bash)" in ~/.bashrc
        zsh:  eval "$(pk completion zsh)" in ~/.zshrc, after compinit
        fish: pk completion fish > ~/.config/fish/completions/pk.fish

        Commands and options complete always; vault names and secret paths (VAULT:PATH,
        pk://VAULT/PATH, folder by folder) when an agent serves the node (`pk agent start`).
        Completion never asks for the password.
        """
        click.echo(SCRIPTS[shell], nl=False)

    return completion


def __getattr__(name: str) -> click.Command:
    """``completion``, the click command (cli/app.py), made on first use."""
    if name == "completion":
        command = globals()["completion"] = _command()
        return command
    raise AttributeError(name)
