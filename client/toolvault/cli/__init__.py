"""The `toolvault` command: the SDK on the command line, plus `serve`, `db upgrade`, `doctor`.

`toolvault agents ...` defines agents (from YAML or JSON files) and calls their tools;
`toolvault mcp` serves an agent's tools over MCP through the optional `mcp` extra.

Commands that talk to a server go through `toolvault.client.Client`, and only through the
SDK's public API. `serve`, `db upgrade` and `doctor` load the server package only when run,
so the CLI works with just the client installed. One module per command group:

```
_main        the entry point: global options, errors and exit codes (`toolvault --help`)
_functions   publish, invoke, get, functions, versions, alias, unalias, delete
_runs        history, stats, execution
_agents      agents apply|list|show|revisions|tools|call|route|delete
_access      keys create|list|revoke|generate, audit
_server      serve, db upgrade, doctor, health, mcp: what runs here rather than on a server
_input       option types, files, --args, the TLS options; usage errors
_output      JSON, tables and "key: value" lines
```
"""

from toolvault.cli._main import main

__all__ = ["main"]
