"""Tests of the server package."""

from toolvault.server.audit import Actor

# Who the in-process domain tests make their changes as.
ACTOR = Actor("tester")
