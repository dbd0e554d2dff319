"""The services: the business rules, one unit of work (transaction) per public method.

Each service checks its requests, runs ``db`` queries in its own sessions, and raises
the domain's errors; none knows of gRPC, so all are testable without a server.
"""
