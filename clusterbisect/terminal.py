"""Text from a workload, made safe to print: its terminal control sequences removed.

A probe's output is the workload's, and a workload may write anything: colours,
cursor movements, a sequence that retitles the window or rewrites the clipboard
(OSC 52), a carriage return that hides the line before it. None of that may reach
the operator's terminal, an agent's context or a report through us. Every string of
workload origin that the tool shows (observed lines, log excerpts, infra errors)
goes through :func:`printable`; the logs on disk keep the bytes as they came.
"""

from __future__ import annotations

import re

# ESC-introduced sequences (ECMA-48): CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings
# (ESC ] ... up to BEL or ST, or the end of the line: an unterminated one must not
# swallow the lines after it), and two-character escapes; their 8-bit C1 forms too.
_SEQUENCES = re.compile(
    r"""
    (?:\x1b\[|\x9b) [0-?]* [ -/]* [@-~]                      # CSI ... final byte
  | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) [^\n]*? (?:\x07|\x1b\\|\x9c|(?=\n)|$)  # to BEL/ST
  | \x1b [ -/]* [0-~]                                        # ESC (intermediates) final
  | \x1b                                                     # a lone ESC
    """,
    re.VERBOSE,
)
# What is left of the controls after the sequences: every C0 but tab and newline, DEL,
# and the C1 range. A carriage return becomes a line break (progress bars redraw a
# line with it; the text that was overwritten is kept, not hidden).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tabs and
    newlines are kept; a carriage return becomes a newline)."""
    if not text or text.isprintable():
        return text
    text = _SEQUENCES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)
