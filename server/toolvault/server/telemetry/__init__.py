"""Telemetry: metrics, traces and logs, used across the layers that do the work.

Beside ``db``, below ``services``: services and the gRPC layer count, time and trace
what they do; nothing here knows of the database or the services.
"""
