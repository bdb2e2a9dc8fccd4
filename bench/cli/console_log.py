"""The console format of ``salbench``'s log (``conf/hydra/job_logging/salbench.yaml``): what a person reads in a
terminal, no line over :data:`WIDTH` characters. The job folder's ``salbench.log`` keeps Hydra's full format.

An ``INFO`` record is its message; a warning or an error starts with its level (``WARNING: ...``). Every line of a
message longer than the width is wrapped at spaces (continuation lines indented by two spaces); a word longer than
the width (a long path) is kept whole rather than cut. A traceback is left as it is.
"""

from __future__ import annotations

import logging
import textwrap

__all__ = ["ConsoleFormatter", "WIDTH"]

#: the console's line width
WIDTH = 120


class ConsoleFormatter(logging.Formatter):
    """``logging.Formatter`` for the console (see the module docstring); ``width``: the wrap width (at least 40)."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.width = max(40, int(width))

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname}: {message}"
        lines: list[str] = []
        for line in message.splitlines() or [""]:
            if len(line) <= self.width:
                lines.append(line)
                continue
            lines += textwrap.wrap(line, self.width, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False, replace_whitespace=False, drop_whitespace=True)
        text = "\n".join(lines)
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text
