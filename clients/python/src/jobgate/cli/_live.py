"""A status line that stays at the bottom of a terminal while other lines scroll above it."""

from __future__ import annotations

import shutil
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"


class LiveLine:
    """On a terminal, `show` redraws one line in place with `\\r`; anywhere else (a pipe, a
    file, CI logs) each new text is written as a plain line of its own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._redraw = stream.isatty()
        self._text = ""
        self._shown = False

    def show(self, text: str) -> None:
        if text == self._text and (self._shown or not self._redraw):
            return
        self._text = text
        if self._redraw:
            # Wider than the terminal, the line would wrap and `\r` could not take it back.
            width = shutil.get_terminal_size().columns - 1
            self._stream.write(CLEAR_LINE + text[:width])
            self._shown = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def hide(self) -> None:
        """Takes the line off the terminal, e.g. before writing other output."""
        if self._shown:
            self._stream.write(CLEAR_LINE)
            self._stream.flush()
            self._shown = False

    def clear(self) -> None:
        """Takes the line off for good: `restore` will not bring it back."""
        self.hide()
        self._text = ""

    def restore(self) -> None:
        """Draws the line again after `hide`."""
        if self._redraw and self._text and not self._shown:
            self.show(self._text)
