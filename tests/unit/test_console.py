"""The shared console prints values literally: MACs are not read as emoji codes."""

from __future__ import annotations

import io

from rich.table import Table

from l2pop.console import make_console


def test_a_mac_with_an_emoji_code_prints_as_written() -> None:
    out = io.StringIO()
    console = make_console(out)
    table = Table("mac")
    table.add_row("fa:16:3e:ab:cd:ef")
    console.print(table)
    console.print("port fa:16:3e:ab:cd:ef is ACTIVE")
    text = out.getvalue()
    assert text.count("fa:16:3e:ab:cd:ef") == 2
    assert "\N{NEGATIVE SQUARED AB}" not in text
