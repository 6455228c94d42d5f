"""Entry point of `pk` / `polykey`: turns every failure into one line, a hint and an exit code.

Kept tiny on purpose: `pk --version` answers before click or any crypto is imported, and each
command group is imported only when it is used.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported on the hot path (`pk secrets cat`)
if TYPE_CHECKING:
    import click

EXIT_INTERNAL = 70
ARGS: list[str] = []
"""The arguments of this run, as given (click drops the `--` that some commands need)."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    ARGS[:] = args
    os.umask(0o077)
    if args and os.environ.get("_PK_COMPLETE"):  # a script of `pk completion`: no click here
        from polykey.cli.completion import complete

        sys.exit(complete(args))
    if args in (["--version"], ["-V"]):
        from polykey import __version__

        sys.stdout.write(f"pk {__version__}\n")
        sys.exit(0)
    if len(args) >= 3 and args[0] == "secrets" and args[1] in ("cat", "write"):
        from polykey.cli.fast import try_fast

        taken: list[bytes] = []
        code = try_fast(args, taken)
        if code is not None:
            sys.exit(code)
        sys.exit(run(args, stdin=taken[0] if taken else None))
    if len(args) >= 4 and args[0] == "vaults" and args[1] == "clone":
        from polykey.cli.fast import try_fast_clone

        code = try_fast_clone(args)
        if code is not None:
            sys.exit(code)
    sys.exit(run(args))


def _wants_json(args: list[str]) -> bool:
    for i, arg in enumerate(args):
        if arg == "--":  # what follows belongs to another program
            break
        if arg == "--format=json" or (arg == "--format" and args[i + 1 : i + 2] == ["json"]):
            return True
    return False


def _report(args: list[str], message: str, hint: str, code: int) -> int:
    if _wants_json(args):
        import json

        doc = {"error": {"message": message, "hint": hint, "exit_code": code}}
        sys.stderr.write(json.dumps(doc) + "\n")
    else:  # messages carry other nodes' words (a peer's error, a vault name): escape them
        from polykey.cli.safe_text import shown

        sys.stderr.write(f"pk: error: {shown(message)}\n")
        if hint:
            sys.stderr.write(f"pk: hint: {shown(hint)}\n")
    return code


def _did_you_mean(exc: click.UsageError) -> str | None:
    """For a misspelt command (`pk secret ls`), the commands it is close to."""
    import difflib

    import click

    ctx, message = exc.ctx, exc.format_message()
    if ctx is None or not isinstance(ctx.command, click.Group):
        return None
    if not message.startswith("No such command"):
        return None
    if "Did you mean" in message:  # click offers it for the groups it loads itself
        return None
    typed = message.split("'")[1] if "'" in message else ""
    close = difflib.get_close_matches(typed, ctx.command.list_commands(ctx), n=3, cutoff=0.6)
    if not close:
        return None
    names = " or ".join(f"`{ctx.command_path} {name}`" for name in close)
    return f"Did you mean {names}?"


def run(args: list[str], stdin: bytes | None = None) -> int:
    """The full CLI; ``stdin``: what the fast path already read of standard input."""
    import click

    from polykey.cli.app import cli
    from polykey.errors import PolykeyError

    try:
        cli.main(args=args, prog_name="pk", standalone_mode=False, obj={"stdin": stdin})
    except PolykeyError as exc:
        return _report(args, exc.message, exc.user_hint, exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except click.UsageError as exc:
        hint = "Run `pk --help` or add --help to the command to see how it is used."
        if exc.ctx is not None:
            hint = (
                _did_you_mean(exc) or f"Run `{exc.ctx.command_path} --help` to see how it is used."
            )
        return _report(args, exc.format_message(), hint, 2)
    except click.ClickException as exc:
        return _report(args, exc.format_message(), "", exc.exit_code)
    except (click.Abort, KeyboardInterrupt, EOFError):
        return _report(args, "Interrupted", "", 130)
    except BrokenPipeError:
        return 141
    except Exception as exc:
        if os.environ.get("PK_DEBUG") == "1":
            raise
        return _report(
            args,
            f"Internal error ({type(exc).__name__})",
            "This is a bug in Polykey; run again with PK_DEBUG=1 to see where it happened.",
            EXIT_INTERNAL,
        )
    return 0


if __name__ == "__main__":
    main()
