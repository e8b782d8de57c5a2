"""The migration engine: files, plan, lock, apply, history, journal, and lint beside it (no gRPC in here).

Rooms:
  files.py, layouts.py                migration files (ours, or dbmate's, golang-migrate's, Flyway's layout)
  statements.py                       splitting and classifying statements (pglast)
  plan.py, runner.py, apply.py        what to run and running it (transactional or no-transaction)
  lock.py, wait.py, startup.py        the advisory lock, waiting for a version, migrations at serve start-up
  history.py, ops.py, imported.py     the engine's own tables; status, baseline, repair; import-history
  concurrent.py, copydata.py          CONCURRENTLY index builds; COPY ... FROM stdin rows in a file
  connections.py, events.py, errors.py  the engine's connections, progress events, errors
  lint.py, squawk.py                  lint: our re-runnability rules plus Squawk (squawk.py runs it)
"""

from __future__ import annotations

from schema_service.migrate.runner import RunOptions, apply_migrations, migrate

__all__ = ["RunOptions", "apply_migrations", "migrate"]
