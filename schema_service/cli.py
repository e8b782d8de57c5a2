"""The migration commands of `schema-service`: migrate, status, verify, lint, repair, baseline."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

AddDatabaseArgs = Callable[[argparse.ArgumentParser], None]


def register(commands: Any, add_database_args: AddDatabaseArgs) -> None:
    """Add the migration subcommands to the `schema-service` parser."""
