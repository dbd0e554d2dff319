// What the client puts on the wire, against an in-process gRPC server on the same protos:
// the API key on every call, and TLS with a given root certificate.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { PROTO_ROOT, ToolvaultClient, ToolvaultError } from "../src/index.js";

const definition = protoLoader.loadSync(
  ["toolvault/v1/function.proto", "toolvault/v1/invocation.proto"],
  {
    includeDirs: [PROTO_ROOT],
  },
);
const v1 = /** @type {any} */ (grpc.loadPackageDefinition(definition)).toolvault.v1;

/** @type {grpc.MetadataValue[][]} The authorization header of every call received, in order. */
const seen = [];
const remember = (/** @type {any} */ call) => seen.push(call.metadata.get("authorization"));

/**
 * Serve GetFunction and Invoke on 127.0.0.1 with the given credentials.
 *
 * @param {grpc.ServerCredentials} credentials
 * @returns {Promise<{server: grpc.Server, address: string}>}
 */
async function serve(credentials) {
  const server = new grpc.Server();
  server.addService(v1.FunctionService.service, {
    GetFunction: (/** @type {any} */ call, /** @type {any} */ done) => {
      remember(call);
      done(null, { function: { name: call.request.ref }, version: { name: call.request.ref } });
    },
  });
  server.addService(v1.InvocationService.service, {
    Invoke: (/** @type {any} */ call, /** @type {any} */ done) => {
      remember(call);
      done({ code: grpc.status.PERMISSION_DENIED, details: "not yours" });
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}

/** @type {{server: grpc.Server, address: string}} */
let plain;
before(async () => {
  plain = await serve(grpc.ServerCredentials.createInsecure());
});
after(() => plain.server.forceShutdown());

test("the API key goes with every call as a bearer token, and errors keep their status", async () => {
  seen.length = 0;
  const client = new ToolvaultClient(plain.address, { apiKey: "s3cret" });
  try {
    assert.equal((await client.getFunction("add")).function.name, "add");
    await assert.rejects(
      client.invoke("add", { a: 1 }),
      new ToolvaultError(grpc.status.PERMISSION_DENIED, "not yours"),
    );
  } finally {
    client.close();
  }
  assert.deepEqual(seen, [["Bearer s3cret"], ["Bearer s3cret"]]);
});

test("without an API key no authorization header is sent", async () => {
  seen.length = 0;
  const client = new ToolvaultClient(plain.address);
  try {
    await client.getFunction("add");
  } finally {
    client.close();
  }
  assert.deepEqual(seen, [[]]);
});

test("TLS works with the given root certificate and fails without it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "toolvault-tls-"));
  const [key, cert] = [join(dir, "key.pem"), join(dir, "cert.pem")];
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost"],
    ],
    { stdio: "pipe" },
  );
  const credentials = grpc.ServerCredentials.createSsl(null, [
    { private_key: readFileSync(key), cert_chain: readFileSync(cert) },
  ]);
  const secure = await serve(credentials);
  // The certificate names localhost: Node deprecates IP addresses as TLS server names.
  secure.address = secure.address.replace("127.0.0.1", "localhost");
  const trusting = new ToolvaultClient(secure.address, {
    rootCert: readFileSync(cert, "utf8"),
    apiKey: "k",
  });
  const untrusting = new ToolvaultClient(secure.address, { tls: true, timeoutMs: 5_000 });
  try {
    seen.length = 0;
    assert.equal((await trusting.getFunction("add")).version.name, "add");
    assert.deepEqual(seen, [["Bearer k"]]);
    await assert.rejects(untrusting.getFunction("add"), { code: grpc.status.UNAVAILABLE });
  } finally {
    trusting.close();
    untrusting.close();
    secure.server.forceShutdown();
  }
});
