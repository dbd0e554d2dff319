"""Plugins: pluggy hooks that see what the server does, and may refuse calls.

A plugin is a module or an object (a class named as a plugin is instantiated with no
arguments) whose methods are marked with :data:`hookimpl` and named after the hooks in
:class:`HookSpecs`. Plugins come from the entry-point group ``toolvault.plugins`` of the
installed distributions and from ``--plugin module:attr`` (``TOOLVAULT_PLUGINS``).

Each implementation is called on its own: one that raises is logged with its plugin's
name and counted in ``toolvault_plugin_errors_total``, and the call it observed goes on,
as do the other plugins. The exception is a deliberate refusal in ``before_invoke`` (a
returned reason, or :class:`Refusal`), which fails the call with PERMISSION_DENIED.
Hooks run in worker threads, possibly several at once: implementations must be
thread-safe, and should be quick, since ``before_invoke`` delays every call.

Hooks get the domain's frozen info objects (never database rows). pluggy's hook
wrappers are not supported: with each implementation called on its own they would
wrap nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Literal

import pluggy

from toolvault.server.domain.agents import AgentInfo
from toolvault.server.domain.errors import PermissionDenied
from toolvault.server.domain.executions import CallContext, ExecutionInfo
from toolvault.server.domain.functions import VersionInfo
from toolvault.server.telemetry import metrics

PROJECT = "toolvault"
ENTRY_POINT_GROUP = "toolvault.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

AgentChange = Literal["created", "updated", "deleted"]

log = logging.getLogger("toolvault.plugins")


class PluginError(Exception):
    """A configured plugin could not be loaded; the server does not start."""


class Refusal(Exception):  # noqa: N818 (a refusal is deliberate, not an error)
    """Raised by a ``before_invoke`` implementation to refuse a call; the message says why."""


@dataclass(frozen=True)
class Call:
    """A call about to run: the version, its checked arguments and on whose behalf."""

    version: VersionInfo
    args_json: str
    context: CallContext


class HookSpecs:
    """The hooks a plugin may implement (as functions or methods of the same names)."""

    @hookspec
    def function_published(self, version: VersionInfo) -> None:
        """A new version was stored (not called when a publish matched an existing one)."""

    @hookspec
    def before_invoke(self, call: Call) -> str | None:
        """A call passed validation and is about to run (or be served from the cache).

        Return None to let it through. Return a reason (a string; anything but None
        refuses), or raise :class:`Refusal`, to refuse it: the caller gets
        PERMISSION_DENIED naming the plugin and the reason, and nothing runs or is
        recorded.
        """

    @hookspec
    def after_invoke(self, execution: ExecutionInfo) -> None:
        """A run was recorded (any status, cached and cancelled runs included)."""

    @hookspec
    def agent_changed(self, agent: AgentInfo, change: AgentChange) -> None:
        """An agent was created or got a new revision (``agent``), or was deleted.

        For a deletion ``agent`` is the revision that was current.
        """


class Plugins:
    """The loaded plugins, and the guarded calls of their hooks."""

    def __init__(self) -> None:
        self._manager = pluggy.PluginManager(PROJECT)
        self._manager.add_hookspecs(HookSpecs)

    @property
    def names(self) -> list[str]:
        """The registered plugins' names, in registration order."""
        return [name for name, _ in self._manager.list_name_plugin()]

    def register(self, plugin: object, name: str) -> None:
        """Register a module or object under ``name``; a class is instantiated first.

        A plugin implementing a hook that does not exist (a misspelt name, say) is refused.
        """
        if self._manager.has_plugin(name):
            raise PluginError(f"plugin {name!r} is loaded already")
        try:
            if isinstance(plugin, type):
                plugin = plugin()
            self._manager.register(plugin, name)
            self._manager.check_pending()
        except Exception as e:
            if self._manager.has_plugin(name):
                self._manager.unregister(name=name)
            raise PluginError(f"plugin {name!r} cannot be registered: {e}") from e

    def load(self, specs: tuple[str, ...]) -> None:
        """Register every ``toolvault.plugins`` entry point, then each ``module:attr``."""
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                plugin = entry_point.load()
            except Exception as e:
                raise PluginError(
                    f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {e!r}"
                ) from e
            self.register(plugin, entry_point.name)
        for spec in specs:
            module_name, sep, attr = spec.partition(":")
            if not sep or not module_name or not attr:
                raise PluginError(f"plugin {spec!r} is not MODULE:ATTRIBUTE")
            try:
                plugin = getattr(importlib.import_module(module_name), attr)
            except Exception as e:
                raise PluginError(f"plugin {spec!r} failed to load: {e!r}") from e
            self.register(plugin, spec)

    def implemented(self, hook: str) -> bool:
        """True if some plugin implements ``hook``: callers skip the thread hop otherwise."""
        return bool(getattr(self._manager.hook, hook).get_hookimpls())

    def function_published(self, version: VersionInfo) -> None:
        """Tell the plugins about a new version."""
        self._notify("function_published", version=version)

    def before_invoke(self, call: Call) -> None:
        """Ask the plugins about a call; PermissionDenied when one refuses it.

        The first refusal ends the round, so that later plugins (a quota, say) do not
        count a call that will not run.
        """
        for impl in self._implementations("before_invoke"):
            try:
                reason = self._guarded(impl, "before_invoke", {"call": call})
            except Refusal as e:
                reason = str(e)
            if reason is not None:
                metrics.REJECTIONS.labels("plugin").inc()
                raise PermissionDenied(
                    f"plugin {impl.plugin_name!r} refused the call: {reason or 'no reason given'}"
                )

    def after_invoke(self, execution: ExecutionInfo) -> None:
        """Tell the plugins about a recorded run."""
        self._notify("after_invoke", execution=execution)

    def agent_changed(self, agent: AgentInfo, change: AgentChange) -> None:
        """Tell the plugins about a changed agent."""
        self._notify("agent_changed", agent=agent, change=change)

    def _implementations(self, hook: str) -> list[pluggy.HookImpl]:
        # pluggy calls the last registered first; so do we.
        return list(reversed(getattr(self._manager.hook, hook).get_hookimpls()))

    def _notify(self, hook: str, **kwargs: object) -> None:
        for impl in self._implementations(hook):
            self._guarded(impl, hook, kwargs)

    def _guarded(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, object]) -> object:
        """What the implementation returns; None (logged and counted) when it raises.

        Only a :class:`Refusal` from ``before_invoke`` passes through.
        """
        try:
            return impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as e:
            if isinstance(e, Refusal) and hook == "before_invoke":
                raise
            log.exception("plugin %r failed in %s", impl.plugin_name, hook)
            metrics.PLUGIN_ERRORS.labels(impl.plugin_name, hook).inc()
            return None
