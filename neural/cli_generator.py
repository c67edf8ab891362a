"""`nfr` commands (filled in by their owning module)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands on the `nfr` sub-parser."""
