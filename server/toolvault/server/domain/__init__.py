"""The domain: value types, errors, name rules, schema helpers and page tokens.

Everything here is plain data and pure functions; it imports nothing else of the server,
so that every layer above (db, services, rpc) can share these types without a cycle.
"""
