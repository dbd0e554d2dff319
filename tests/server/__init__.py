"""Tests of the server package."""

from toolvault.server.domain.audit import Actor

# Who the in-process domain tests make their changes as.
ACTOR = Actor("tester")
