"""The gRPC layer: one servicer module per proto service, converters, statuses, interceptors.

A servicer method decodes the request (``convert``), calls a service, and encodes the
reply; ``status`` maps the domain's errors to status codes in one table, and
``interceptors`` lists what runs around every call, in its order.
"""
