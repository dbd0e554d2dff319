"""The toolvault server: configuration, database, domain services and the gRPC layer.

Layers point one way: ``api`` (thin gRPC servicers) calls the domain services in
``functions`` and ``invocations``, which own the transactions and call the queries in
``store`` with a session; ``toolvault.sandbox`` validates and runs the code.
"""
