"""The embedded API's database: models, engines, migrations and the event outbox.

SQLite (WAL, in the data dir) by default, PostgreSQL when ``api.database_url`` says
so; the same models, migrations and outbox on both (docs/database.md). Nothing here
prints or exits: connection failures surface as ``DatabaseUnavailable``.
"""
