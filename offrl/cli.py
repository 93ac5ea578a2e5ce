"""The `offrl` command: a table of subcommands, each a dataclass of arguments plus a function.

Arguments and their help come from the dataclass fields and field docstrings (via tyro);
the library logic lives in the modules the command functions call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

# command words -> "module:function"; the function takes argv and returns an exit code.
COMMANDS: dict[tuple[str, ...], str] = {
    ("datasets", "info"): "offrl.commands.datasets:info",
    ("datasets", "list"): "offrl.commands.datasets:list_",
    ("train",): "offrl.commands.train:main",
    ("eval",): "offrl.commands.eval:main",
    ("inspect",): "offrl.commands.inspect:main",
    ("collect", "keytodoor"): "offrl.commands.collect:keytodoor",
    ("collect", "env"): "offrl.commands.collect:env",
    ("collect", "mujoco"): "offrl.commands.collect:mujoco",
    ("compare",): "offrl.commands.compare:main",
}


def _usage() -> str:
    lines = ["usage: offrl <command> [options]   (offrl <command> --help for details)", ""]
    lines += [f"  offrl {' '.join(words)}" for words in COMMANDS]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int]:
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Longest match first so `datasets info` wins over a hypothetical `datasets`.
    for words in sorted(COMMANDS, key=len, reverse=True):
        if tuple(args[: len(words)]) == words:
            prog = "offrl " + " ".join(words)
            return int(_resolve(COMMANDS[words])(args[len(words):], prog) or 0)
    print(_usage(), file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
    return 0 if args[:1] in (["-h"], ["--help"]) else 2


def parse(cls: type, argv: Sequence[str], prog: str) -> Any:
    """Parse `argv` into dataclass `cls` (help text from its field docstrings)."""
    import tyro

    return tyro.cli(cls, args=list(argv), prog=prog)


if __name__ == "__main__":
    raise SystemExit(main())
