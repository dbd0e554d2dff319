"""The database: engine and sessions, tables, migrations, and one query module per aggregate.

Every query function takes the session or connection of the caller's unit of work and
never commits: the services own the transactions.
"""
