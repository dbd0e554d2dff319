#!/usr/bin/env node
// A small command line on ToolvaultClient: publish a file, invoke a ref, list the history.
// Prints JSON; a failed RPC prints "CODE: message" on stderr. Exit codes are the Python
// CLI's: 1 the function failed or the server failed the request, 2 usage error or the
// request was rejected, 3 the server cannot be reached.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { ToolvaultClient, ToolvaultError } from "../src/index.js";

/** The refusals that mean "the request is wrong", as opposed to "the server failed". */
const REJECTED = new Set([
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "FAILED_PRECONDITION",
  "PERMISSION_DENIED",
  "UNAUTHENTICATED",
]);

/**
 * @param {ToolvaultError} error
 * @returns {number}
 */
function exitCode(error) {
  if (error.codeName === "UNAVAILABLE") return 3;
  return REJECTED.has(error.codeName) ? 2 : 1;
}

const USAGE = `usage: toolvault-node [--server HOST:PORT] COMMAND
  publish NAME FILE        store FILE's Python source as a new version of NAME
  invoke REF [ARGS_JSON]   run REF ("name", "name@3", "name@alias") with a JSON object
  history [NAME]           list the latest executions, of NAME or of every function
env: TOOLVAULT_SERVER (default 127.0.0.1:50051), TOOLVAULT_API_KEY`;

const { values, positionals } = parseArgs({
  options: {
    server: { type: "string", default: process.env.TOOLVAULT_SERVER ?? "127.0.0.1:50051" },
    help: { type: "boolean", short: "h" },
  },
  allowPositionals: true,
});
const [command, ...rest] = positionals;
/** @type {Record<string, (client: ToolvaultClient, ...args: string[]) => Promise<unknown>>} */
const commands = {
  publish: async (client, name, file) => client.publish(name, readFileSync(file, "utf8")),
  invoke: async (client, ref, argsJson = "{}") => client.invoke(ref, JSON.parse(argsJson)),
  history: async (client, functionName = "") =>
    (await client.listExecutions({ functionName })).executions,
};
// A command's arity counts the client and its arguments up to the first optional one.
const known = Object.hasOwn(commands, command ?? "");
if (values.help || !known || rest.length < commands[command].length - 1) {
  console.error(USAGE);
  process.exit(values.help ? 0 : 2);
}

const client = new ToolvaultClient(values.server, { apiKey: process.env.TOOLVAULT_API_KEY });
try {
  const result = await commands[command](client, ...rest);
  console.log(JSON.stringify(result, null, 2));
  const execution = /** @type {{ status?: string }} */ (result);
  if (command === "invoke" && execution.status !== "EXECUTION_STATUS_OK") process.exitCode = 1;
} catch (error) {
  if (!(error instanceof ToolvaultError)) throw error;
  console.error(error.message);
  process.exitCode = exitCode(error);
} finally {
  client.close();
}
