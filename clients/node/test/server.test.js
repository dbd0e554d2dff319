// Against a real toolvault server at TOOLVAULT_TEST_SERVER ("host:port"); tests/
// test_node_client.py starts one and runs this file. Without the variable these tests skip.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import * as grpc from "@grpc/grpc-js";

import { ToolvaultClient, ToolvaultError } from "../src/index.js";

const address = process.env.TOOLVAULT_TEST_SERVER;
const CLI = fileURLToPath(new URL("../bin/toolvault-node.js", import.meta.url));
const ADD =
  'def main(a, b):\n    """Add two numbers."""\n    print("adding")\n    return {"sum": a + b}\n';

describe(
  "against a toolvault server",
  { skip: !address && "TOOLVAULT_TEST_SERVER is not set" },
  () => {
    /** @type {ToolvaultClient} */
    let client;
    // A fresh name per run, so a reused server's earlier runs do not interfere.
    const name = `node_add_${randomBytes(4).toString("hex")}`;

    before(() => {
      client = new ToolvaultClient(/** @type {string} */ (address), {
        apiKey: "unused-until-auth",
        timeoutMs: 30_000,
      });
    });
    after(() => client.close());

    test("publishes a function, invokes it and finds the run in the history", async () => {
      const { version, created } = await client.publish(name, ADD);
      assert.equal(created, true);
      assert.equal(version.version, 1);
      assert.match(version.sha256, /^[0-9a-f]{64}$/);
      assert.equal(version.description, "Add two numbers.");
      assert.ok(version.createTime instanceof Date);

      const got = await client.getFunction(`${name}@1`);
      assert.equal(got.function.latestVersion, 1);
      assert.equal(got.version.source, ADD);
      assert.equal(got.version.sha256, version.sha256);

      const execution = await client.invoke(name, { a: 2, b: 40 });
      assert.equal(execution.status, "EXECUTION_STATUS_OK");
      assert.deepEqual(JSON.parse(execution.resultJson), { sum: 42 });
      assert.equal(execution.stdout, "adding\n");
      assert.equal(execution.error, null);
      assert.equal(execution.sha256, version.sha256);

      const { executions } = await client.listExecutions({ functionName: name });
      assert.deepEqual(
        executions.map((e) => [e.id, e.status, e.resultJson]),
        [[execution.id, "EXECUTION_STATUS_OK", '{"sum": 42}']],
      );
      assert.equal((await client.getExecution(execution.id)).argsJson, '{"a":2,"b":40}');
    });

    test("a version published with fresh isolation says so, and is a new version", async () => {
      const warm = await client.publish(`${name}_iso`, ADD);
      assert.equal(warm.version.isolation, "ISOLATION_WARM");
      const fresh = await client.publish(`${name}_iso`, ADD, { isolation: "ISOLATION_FRESH" });
      assert.deepEqual([fresh.created, fresh.version.version], [true, 2]);
      assert.equal(fresh.version.isolation, "ISOLATION_FRESH");
      assert.notEqual(fresh.version.sha256, warm.version.sha256);
      assert.equal(
        (await client.getFunction(`${name}_iso@2`)).version.isolation,
        "ISOLATION_FRESH",
      );
    });

    test("egress reaches the server, which refuses it while its egress is off", async () => {
      await assert.rejects(client.publish(`${name}_web`, ADD, { egress: ["api.example.com"] }), {
        code: grpc.status.FAILED_PRECONDITION,
        message: /egress is off on this server/,
      });
    });

    test("a version declares the secrets it reads, sorted, as part of its content", async () => {
      const source = "from toolvault import secrets\n\ndef main():\n    return len(secrets)\n";
      const { version } = await client.publish(`${name}_sec`, source, {
        secrets: ["B_KEY", "A_KEY"],
      });
      assert.deepEqual(version.secrets, ["A_KEY", "B_KEY"]);
      const plain = await client.publish(`${name}_sec`, ADD);
      assert.deepEqual(plain.version.secrets, []);
    });

    test("a failing function is a successful call whose execution carries the error", async () => {
      await client.publish(`${name}_div`, "def main(x):\n    return 1 / x\n");
      const execution = await client.invoke(`${name}_div`, { x: 0 });
      assert.equal(execution.status, "EXECUTION_STATUS_ERROR");
      assert.equal(execution.error?.type, "ZeroDivisionError");
      assert.equal(execution.resultJson, "");
    });

    test("an invalid publish is rejected with INVALID_ARGUMENT and the server's message", async () => {
      const rejected = client.publish(name, "def main(:\n    pass\n");
      await assert.rejects(rejected, (/** @type {ToolvaultError} */ error) => {
        assert.ok(error instanceof ToolvaultError);
        assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(error.codeName, "INVALID_ARGUMENT");
        assert.match(error.details, /^source rejected: line 1, column \d+: SyntaxError/);
        assert.equal(error.message, `INVALID_ARGUMENT: ${error.details}`);
        return true;
      });
    });

    test("an unknown ref is NOT_FOUND", async () => {
      await assert.rejects(client.invoke(`${name}_missing`), { code: grpc.status.NOT_FOUND });
    });

    test("the command line publishes, invokes and reports errors", async () => {
      const run = promisify(execFile);
      const env = { ...process.env, TOOLVAULT_SERVER: address };
      const file = join(mkdtempSync(join(tmpdir(), "toolvault-node-")), "add.py");
      writeFileSync(file, ADD);
      const published = await run(process.execPath, [CLI, "publish", `${name}_cli`, file], { env });
      assert.equal(JSON.parse(published.stdout).version.version, 1);
      const invoked = await run(
        process.execPath,
        [CLI, "invoke", `${name}_cli`, '{"a": 1, "b": 2}'],
        { env },
      );
      assert.equal(JSON.parse(invoked.stdout).resultJson, '{"sum": 3}');
      await assert.rejects(
        run(process.execPath, [CLI, "invoke", `${name}_nope`], { env }),
        (error) => {
          assert.equal(/** @type {any} */ (error).code, 2); // rejected, as the Python CLI says
          assert.match(/** @type {any} */ (error).stderr, /^NOT_FOUND: /);
          return true;
        },
      );
    });
  },
);
