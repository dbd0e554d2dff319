"""The toolvault server: layers, each importing only those below it.

``app`` and ``cli`` wire it up and start it. ``rpc`` holds the gRPC servicers (one
module per proto service), the converters, the status table and the interceptors.
``services`` holds the business rules, one transaction per public method. ``db`` holds
the tables, migrations and one query module per aggregate, each function taking a
session and never committing; ``telemetry`` (metrics, traces, logs) sits beside it.
``domain`` holds the values, errors (their tree is drawn in ``domain.errors``), name
rules and schema helpers, and imports nothing of the server; ``config`` (the settings)
sits beside it. ``toolvault.sandbox`` validates and runs the code. The import-linter
contract in pyproject.toml keeps the layers so.
"""
