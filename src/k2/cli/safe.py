"""Untrusted text made safe for the terminal: control characters shown as escapes, rich markup shown literally.

Symbols, exchange names, SQL results and error messages come from feeds, files and users. Printed raw,
``\\x1b[2J`` clears the screen (any ANSI/OSC sequence can restyle, retitle or hide output), and through rich
``[bold red]X[/bold red]`` renders styled instead of as the text it is. Every CLI print of such text goes
through :func:`plain` (for ``rich.text.Text`` cells and raw writes) or :func:`markup` (inside a string that rich
parses as markup).

Hazard: only what passes through these helpers is safe; rich parses markup in every ``console.print`` string.

Example:
    >>> plain("BTC\\x1b[2JUSDT")
    'BTC\\\\x1b[2JUSDT'
    >>> markup("[bold red]X[/bold red]")
    '\\\\[bold red]X\\\\[/bold red]'
    >>> cell("[b]\\x07").plain
    '[b]\\\\x07'
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

# C0 controls (tab and newline included: they break table cells), DEL, C1 controls, and the Unicode
# bidirectional overrides/isolates that reorder what a terminal shows ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def plain(value: object) -> str:
    """``str(value)`` with every control character written as an escape (``\\x1b``); no markup handling.

    >>> plain("a\\tb\\u202e")
    'a\\\\x09b\\\\u202e'
    """
    return _UNSAFE.sub(_escape_char, str(value))


def markup(value: object) -> str:
    """:func:`plain` and rich markup escaped: safe inside a string passed to ``console.print``.

    >>> markup("[x]")
    '\\\\[x]'
    """
    return escape(plain(value))


def cell(value: object) -> Text:
    """A rich table cell showing ``value`` literally (table cells are parsed as markup otherwise)."""
    return Text(plain(value))
