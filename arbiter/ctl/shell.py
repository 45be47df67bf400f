"""`arbiter ctl` with no command: an interactive shell, as supervisorctl has.

Each line is split like a shell command line and run as `arbiter ctl <line>` with the same
global options. Readline (when present) keeps a history file and completes command names, then
process names, which are fetched from the server once per line completed.
"""

from __future__ import annotations

import cmd
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

HISTORY = os.path.expanduser("~/.arbiter_ctl_history")


class Shell(cmd.Cmd):
    intro = ""

    def __init__(self, run: Callable[[list[str]], int], commands: list[str],
                 process_names: Callable[[], list[str]]) -> None:
        super().__init__()
        self._run, self._commands, self._process_names = run, sorted(commands), process_names
        self._names_cache: list[str] | None = None
        self.prompt = "arbiter> " if sys.stdin.isatty() else ""
        self.last_status = 0

    def cmdloop(self, intro: str | None = None) -> None:
        readline: Any = None
        if sys.stdin.isatty():  # history and completion are for people; piped input gets none
            try:
                import readline
            except ImportError:  # pragma: no cover - readline is missing on some builds
                pass
        if readline is not None:
            try:
                readline.read_history_file(HISTORY)
            except OSError:
                pass
            readline.set_completer_delims(" \t")
        try:
            super().cmdloop(intro)
        except KeyboardInterrupt:
            self.stdout.write("\n")
        finally:
            if readline is not None:
                try:
                    readline.write_history_file(HISTORY)
                except OSError:
                    pass

    def onecmd(self, line: str) -> bool:
        line = line.strip()
        self._names_cache = None
        if not line:
            return False
        if line in ("EOF", "quit", "exit"):
            if line == "EOF":
                self.stdout.write("\n" if self.prompt else "")
            return True
        if line == "help" or line == "?":
            self.stdout.write("commands: " + " ".join(self._commands) + "\n"
                              "'help <command>' for details; 'quit' to leave\n")
            return False
        try:
            args = shlex.split(line)
        except ValueError as exc:
            self.stdout.write(f"error: {exc}\n")
            return False
        if args[0] in ("help", "?"):
            args = [*args[1:], "--help"]
        try:
            self.last_status = self._run(args)
        except KeyboardInterrupt:
            self.stdout.write("\n")
        return False

    def completenames(self, text: str, *ignored: object) -> list[str]:
        return [c + " " for c in self._commands + ["quit", "help"] if c.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if self._names_cache is None:
            try:
                self._names_cache = self._process_names()
            except Exception:
                self._names_cache = []
        words = self._names_cache + (["stdout", "stderr"] if line.startswith("tail") else ["all"])
        return [w + " " for w in words if w.startswith(text)]

    def emptyline(self) -> bool:
        return False
