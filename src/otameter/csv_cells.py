"""CSV that a spreadsheet opens as data: no cell from a string can start a formula.

Every CSV otameter writes goes through ``CsvWriter`` (the dashboard's own downloads follow
the same rule in ``dashboard.js``). As OWASP recommends for CSV injection
(https://owasp.org/www-community/attacks/CSV_Injection), a string cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote, which
spreadsheets show as text and do not evaluate.

The rule follows the cell's type, not its text. Strings are where outside input lands (a
device's ``version_name``, an app or org name); numbers (``int``/``float``) are only ever
computed by the server, so they are written as they are and a negative figure stays a number
a spreadsheet can sum. A device cannot make a number out of ``"-1+cmd"``: it stays a string
and is neutralised.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` as it may go into a CSV cell: strings that could start a formula are quoted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvWriter:
    """``csv.writer`` whose every row, header included, goes through ``safe_cell``."""

    def __init__(self, stream: IO[str], lineterminator: str = "\r\n") -> None:
        self._writer = csv.writer(stream, lineterminator=lineterminator)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])
