// A Node.js client for a toolvault server.
//
// The stubs are built at load time by @grpc/proto-loader from the repository's own
// proto/toolvault/v1/*.proto (never a copy), so this client follows the contract that the
// server and the Python SDK are generated from. Messages are plain objects with camelCase
// fields, enums as their names ("EXECUTION_STATUS_OK"), 64-bit integers as numbers and
// Timestamps as Dates. Every RPC goes through ToolvaultClient#call, the one place where a
// gRPC error becomes a ToolvaultError.

import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The folder holding toolvault/v1/*.proto: the repository's proto/ module. */
export const PROTO_ROOT = fileURLToPath(new URL("../../../proto", import.meta.url));

const PROTO_FILES = ["function", "invocation", "history"].map(
  (name) => `toolvault/v1/${name}.proto`,
);
// An Invoke reply can carry up to three times the server's output cap (stdout, stderr,
// result); gRPC's default 4 MiB receive limit would refuse it.
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const definition = protoLoader.loadSync(PROTO_FILES, {
  includeDirs: [PROTO_ROOT],
  // Peak memory in bytes is the only 64-bit field; it stays far below 2**53.
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const v1 = /** @type {any} */ (grpc.loadPackageDefinition(definition)).toolvault.v1;

/** gRPC status code names by number ("INVALID_ARGUMENT" for 3). */
const CODE_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, code]) => [code, name]),
);

/**
 * A failed RPC: the gRPC status code and the server's message.
 *
 * A function that fails when invoked is not a failed RPC: its execution carries the status.
 */
export class ToolvaultError extends Error {
  /**
   * @param {number} code The gRPC status code, e.g. 3 (grpc.status.INVALID_ARGUMENT).
   * @param {string} details The server's message.
   */
  constructor(code, details) {
    const codeName = CODE_NAMES[code] ?? String(code);
    super(`${codeName}: ${details}`);
    this.name = "ToolvaultError";
    /** The gRPC status code. */
    this.code = code;
    /** The code's name, e.g. "INVALID_ARGUMENT". */
    this.codeName = codeName;
    /** The server's message. */
    this.details = details;
  }
}

/**
 * @typedef {object} Limits
 * @property {number} [timeoutMs] Wall-clock limit of one run, in milliseconds.
 * @property {number} [memoryMb] Memory limit of the sandbox process, in MiB.
 * @property {number} [maxOutputBytes] Cap on stdout, stderr and the JSON result, each.
 * @property {number} [maxConcurrency] Most runs of the function at once; 0 is unlimited.
 */

/**
 * @typedef {object} FunctionVersion
 * @property {string} name
 * @property {number} version Version number, 1 for the first.
 * @property {string} sha256 Hex sha256 of the canonical content.
 * @property {string} source The Python source (empty in lists).
 * @property {string} entrypoint
 * @property {string} description
 * @property {string} inputSchemaJson
 * @property {string} outputSchemaJson
 * @property {Required<Limits>} limits With the server's defaults filled in.
 * @property {string[]} allowedImports
 * @property {Date | null} createTime
 * @property {boolean} deterministic
 * @property {"ISOLATION_WARM" | "ISOLATION_FRESH"} isolation Whether calls may share warm
 *   workers of this version, or each runs in a process of its own.
 * @property {string[]} egress The hosts its calls may reach ("api.example.com:443").
 * @property {string[]} secrets Names of the namespace's secrets its calls get, sorted.
 */

/**
 * @typedef {object} FunctionInfo
 * @property {string} name
 * @property {number} latestVersion
 * @property {Record<string, number>} aliases Named aliases and their versions.
 * @property {string} description
 * @property {Date | null} createTime
 * @property {Date | null} updateTime
 */

/**
 * @typedef {object} ExecutionError
 * @property {string} type The exception's class name, e.g. "ZeroDivisionError".
 * @property {string} message
 * @property {string} traceback Frames of the function's own source only.
 */

/**
 * @typedef {object} Execution
 * @property {string} id
 * @property {string} functionName
 * @property {number} version The version that ran.
 * @property {string} sha256 Exactly what ran.
 * @property {string} status E.g. "EXECUTION_STATUS_OK" or "EXECUTION_STATUS_ERROR".
 * @property {string} argsJson
 * @property {string} resultJson The return value as JSON text; empty unless OK.
 * @property {string} stdout
 * @property {string} stderr
 * @property {ExecutionError | null} error Set when status is not OK.
 * @property {Date | null} startTime
 * @property {number} durationMs
 * @property {number} cpuTimeMs
 * @property {number} peakMemoryBytes
 * @property {string} caller The peer address of the connection.
 * @property {boolean} argsTruncated True when argsJson was cut to fit the history.
 * @property {boolean} resultTruncated True when resultJson was cut to fit the history.
 * @property {string} agent The agent it ran for as a tool; empty for a plain invoke.
 * @property {number} agentRevision
 * @property {string} conversationId
 * @property {number} chainDepth How many agents deep the call was made.
 * @property {boolean} cached True when answered from the result cache.
 * @property {string} cachedFrom The execution whose result was served, when cached.
 * @property {string} traceId W3C trace id; empty when untraced.
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [apiKey] Sent on every call as "authorization: Bearer <apiKey>".
 * @property {Buffer | string} [rootCert] PEM root certificate(s): connect over TLS
 *   trusting them.
 * @property {boolean} [tls] Connect over TLS trusting the system's roots (implied by
 *   rootCert).
 * @property {number} [timeoutMs] Default deadline of each call; none by default.
 */

/** @param {{seconds: number, nanos: number} | null} ts */
function toDate(ts) {
  return ts ? new Date(ts.seconds * 1000 + Math.floor(ts.nanos / 1e6)) : null;
}

/** @param {Date | undefined} date */
function toTimestamp(date) {
  if (!date) return null;
  const ms = date.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** @returns {FunctionVersion} */
function fromVersion(/** @type {any} */ pb) {
  return { ...pb, createTime: toDate(pb.createTime) };
}

/** @returns {FunctionInfo} */
function fromFunction(/** @type {any} */ pb) {
  return { ...pb, createTime: toDate(pb.createTime), updateTime: toDate(pb.updateTime) };
}

/** @returns {Execution} */
function fromExecution(/** @type {any} */ pb) {
  return { ...pb, startTime: toDate(pb.startTime) };
}

/** A connection to a toolvault server; close() it when done. */
export class ToolvaultClient {
  /** @type {any} */ #functions;
  /** @type {any} */ #invocations;
  /** @type {any} */ #history;
  /** @type {string | undefined} */ #apiKey;
  /** @type {number | undefined} */ #timeoutMs;

  /**
   * Open a channel (lazily: nothing is sent until the first call).
   *
   * @param {string} address The server's "host:port".
   * @param {ClientOptions} [options]
   */
  constructor(address, { apiKey, rootCert, tls = false, timeoutMs } = {}) {
    const credentials =
      rootCert !== undefined || tls
        ? grpc.credentials.createSsl(rootCert === undefined ? null : Buffer.from(rootCert))
        : grpc.credentials.createInsecure();
    const channelOptions = { "grpc.max_receive_message_length": MAX_MESSAGE_BYTES };
    this.#functions = new v1.FunctionService(address, credentials, channelOptions);
    // The stubs share one channel, as the Python client's do.
    const shared = { channelOverride: this.#functions.getChannel() };
    this.#invocations = new v1.InvocationService(address, credentials, shared);
    this.#history = new v1.HistoryService(address, credentials, shared);
    this.#apiKey = apiKey;
    this.#timeoutMs = timeoutMs;
  }

  /** Close the channel; calls in flight are cancelled. */
  close() {
    this.#functions.close();
  }

  /**
   * Validate and store a function version. Identical content returns the existing version
   * with created false; any change stores version N+1.
   *
   * @param {string} name The function's name, [a-z][a-z0-9_]{0,63}, optionally after NAMESPACE/.
   * @param {string} source The Python source.
   * @param {object} [options]
   * @param {string} [options.entrypoint] The function to call; "main" by default.
   * @param {string} [options.description] Default: the entrypoint's docstring.
   * @param {object} [options.inputSchema] JSON Schema the arguments must match.
   * @param {object} [options.outputSchema] JSON Schema the result must match.
   * @param {Limits} [options.limits] Unset limits take the server's defaults.
   * @param {string[]} [options.allowedImports] A subset of the server's allow-list.
   * @param {boolean} [options.deterministic] Results may come from the server's cache.
   * @param {"ISOLATION_WARM" | "ISOLATION_FRESH"} [options.isolation] "ISOLATION_FRESH" runs
   *   every call in a process of its own; by default calls may share warm workers.
   * @param {string[]} [options.egress] Hosts its calls may reach, "HOST[:PORT]", within
   *   what the server allows the namespace.
   * @param {string[]} [options.secrets] Names of secrets of the function's namespace its
   *   calls read as `from toolvault import secrets`; they need not be set yet.
   * @returns {Promise<{version: FunctionVersion, created: boolean}>}
   * @throws {ToolvaultError} INVALID_ARGUMENT naming the field, or the source's line.
   */
  async publish(name, source, options = {}) {
    const request = {
      name,
      source,
      entrypoint: options.entrypoint ?? "main",
      description: options.description ?? "",
      inputSchemaJson: options.inputSchema ? JSON.stringify(options.inputSchema) : "",
      outputSchemaJson: options.outputSchema ? JSON.stringify(options.outputSchema) : "",
      limits: options.limits ?? {},
      allowedImports: options.allowedImports ?? [],
      deterministic: options.deterministic ?? false,
      isolation: options.isolation ?? "ISOLATION_UNSPECIFIED",
      egress: options.egress ?? [],
      secrets: options.secrets ?? [],
    };
    const response = await this.#call(this.#functions, "PublishFunction", request);
    return { version: fromVersion(response.version), created: response.created };
  }

  /**
   * Return a function and the version a reference resolves to, with its source.
   *
   * @param {string} ref "name", "name@3" or "name@alias".
   * @returns {Promise<{function: FunctionInfo, version: FunctionVersion}>}
   * @throws {ToolvaultError} NOT_FOUND.
   */
  async getFunction(ref) {
    const response = await this.#call(this.#functions, "GetFunction", { ref });
    return { function: fromFunction(response.function), version: fromVersion(response.version) };
  }

  /**
   * Run a function version in a fresh sandbox and return the recorded run. A function
   * that fails does not reject: check execution.status.
   *
   * @param {string} ref "name", "name@3" or "name@alias".
   * @param {Record<string, unknown>} [args] Keyword arguments, JSON-serializable.
   * @param {object} [options]
   * @param {string} [options.idempotencyKey] A repeated call with the same key, ref and
   *   args returns the first call's execution instead of running again.
   * @param {number} [options.timeoutMs] Deadline of this call; the server kills the run
   *   when it passes.
   * @returns {Promise<Execution>}
   * @throws {ToolvaultError} NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
   *   FAILED_PRECONDITION or DEADLINE_EXCEEDED.
   */
  async invoke(ref, args = {}, { idempotencyKey = "", timeoutMs } = {}) {
    const request = { ref, argsJson: JSON.stringify(args), idempotencyKey };
    const response = await this.#call(this.#invocations, "Invoke", request, timeoutMs);
    return fromExecution(response.execution);
  }

  /**
   * List recorded executions, newest first, one page at a time.
   *
   * @param {object} [filter] Every filter that is set must match.
   * @param {string} [filter.functionName]
   * @param {string} [filter.status] E.g. "EXECUTION_STATUS_ERROR".
   * @param {number} [filter.version] Needs functionName.
   * @param {Date} [filter.since] Runs that started at or after this time.
   * @param {Date} [filter.until] Runs that started before this time.
   * @param {number} [filter.pageSize] 50 by default, at most 1000.
   * @param {string} [filter.pageToken] nextPageToken of the previous page.
   * @returns {Promise<{executions: Execution[], nextPageToken: string}>}
   */
  async listExecutions(filter = {}) {
    const { since, until, ...rest } = filter;
    const request = { ...rest, startTimeFrom: toTimestamp(since), startTimeTo: toTimestamp(until) };
    const response = await this.#call(this.#history, "ListExecutions", request);
    return {
      executions: response.executions.map(fromExecution),
      nextPageToken: response.nextPageToken,
    };
  }

  /**
   * Return one recorded execution.
   *
   * @param {string} id
   * @returns {Promise<Execution>}
   * @throws {ToolvaultError} NOT_FOUND.
   */
  async getExecution(id) {
    const response = await this.#call(this.#history, "GetExecution", { id });
    return fromExecution(response.execution);
  }

  /**
   * Send one unary call with the key and deadline; turn a gRPC error into a ToolvaultError.
   *
   * @param {any} stub
   * @param {string} method
   * @param {object} request
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  #call(stub, method, request, timeoutMs = this.#timeoutMs) {
    const metadata = new grpc.Metadata();
    if (this.#apiKey !== undefined) metadata.set("authorization", `Bearer ${this.#apiKey}`);
    /** @type {grpc.CallOptions} */
    const options = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    return new Promise((resolve, reject) => {
      stub[method](
        request,
        metadata,
        options,
        (/** @type {any} */ error, /** @type {any} */ response) => {
          if (error) reject(new ToolvaultError(error.code, error.details));
          else resolve(response);
        },
      );
    });
  }
}
