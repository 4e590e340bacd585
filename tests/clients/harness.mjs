// Shared helpers of the client scripts: checks that count passes and
// failures, assertions, and the closing "N passed, N failed" line.

import { createClient, MatrixError } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("silent");

const results = { passed: 0, failed: 0 };

/** The base URL given on the command line, or exit with usage. */
export function baseUrlArgument(script) {
  const baseUrl = process.argv[2];
  if (!baseUrl) {
    console.error(`usage: node ${script} BASE_URL`);
    process.exit(2);
  }
  return baseUrl;
}

/** A new account on `baseUrl` (dummy auth), as a logged-in client (not syncing). */
export async function registerClient(baseUrl, name, password) {
  const anonymous = createClient({ baseUrl });
  const response = await anonymous.registerRequest({ username: name, password, auth: { type: "m.login.dummy" } });
  return createClient({ baseUrl, userId: response.user_id, accessToken: response.access_token, deviceId: response.device_id });
}

export async function check(name, body) {
  try {
    await body();
    results.passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    results.failed += 1;
    console.log(`not ok - ${name}: ${error?.stack ?? error}`);
  }
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export async function expectError(promise, errcode, httpStatus) {
  try {
    await promise;
  } catch (error) {
    assert(error instanceof MatrixError, `a MatrixError, got ${error}`);
    assert(error.errcode === errcode, `errcode ${errcode}, got ${error.errcode}`);
    assert(error.httpStatus === httpStatus, `status ${httpStatus}, got ${error.httpStatus}`);
    return error;
  }
  throw new Error(`expected ${errcode}, but the request succeeded`);
}

/** Prints the summary line and exits non-zero on any failure. */
export function finish() {
  console.log(`${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed === 0 ? 0 : 1);
}
