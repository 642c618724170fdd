"""A program run on a pseudo-terminal, as a person runs it, with its screen output readable
while it runs (programs that redraw, like `--watch`, draw only on a terminal)."""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Terminal:
    process: subprocess.Popen[bytes]
    _output: bytearray = field(default_factory=bytearray)

    def screen(self) -> str:
        """Everything the program has written so far (escape sequences included)."""
        return self._output.decode("utf-8", "replace")


@contextlib.contextmanager
def terminal(*argv: str, columns: int = 160, lines: int = 50) -> Iterator[Terminal]:
    """Run `argv` on a new pseudo-terminal; on leaving, stop it if it still runs."""
    controller, attached = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm"}
    env = {k: v for k, v in env.items() if not k.startswith("EMPATHCTL")}
    process = subprocess.Popen(
        argv, stdin=attached, stdout=attached, stderr=attached, env=env, close_fds=True
    )
    os.close(attached)
    running = Terminal(process)

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the program closed its end
                return
            if not chunk:
                return
            running._output += chunk

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(10)
        os.close(controller)
