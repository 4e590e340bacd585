// Accounts and devices through matrix-js-sdk, the library behind Element Web.
//
// Usage: node accounts.mjs BASE_URL
// Drives registration (with the SDK's own user-interactive auth engine), login,
// capabilities, devices, password change, refresh tokens and logout against a
// running server, and prints "N passed, N failed". Exits non-zero on failure.

import { createClient, InteractiveAuth, MatrixError } from "matrix-js-sdk";

import { assert, baseUrlArgument, check, expectError, finish } from "./harness.mjs";

const baseUrl = baseUrlArgument("accounts.mjs");
const PASSWORD = "js-sdk password";

/** Runs a request through the SDK's InteractiveAuth, answering each stage. */
function withInteractiveAuth(client, doRequest, answerStage) {
  let failStage;
  const stageFailed = new Promise((_, reject) => (failStage = reject));
  const auth = new InteractiveAuth({
    matrixClient: client,
    doRequest,
    stateUpdated: (stage, status) => {
      if (status?.errcode) {
        // The server refused the stage; a UI would ask the user again.
        failStage(new MatrixError({ errcode: status.errcode, error: status.error }, 401));
        return;
      }
      auth.submitAuthDict(answerStage(stage));
    },
    requestEmailToken: () => Promise.reject(new Error("no email here")),
  });
  return Promise.race([auth.attemptAuth(), stageFailed]);
}

const anonymous = createClient({ baseUrl });
const username = `js${Date.now().toString(36)}`;
let userId;
let session;

await check("versions are advertised", async () => {
  const versions = await anonymous.getVersions();
  assert(versions.versions.includes("v1.1"), JSON.stringify(versions));
});

await check("username availability", async () => {
  assert((await anonymous.isUsernameAvailable(username)) === true, "free name is available");
});

await check("registration through user-interactive auth (m.login.dummy)", async () => {
  const response = await withInteractiveAuth(
    anonymous,
    (auth) => anonymous.registerRequest({ username, password: PASSWORD, auth: auth ?? undefined, initial_device_display_name: "js-sdk" }),
    (stage) => {
      assert(stage === "m.login.dummy", `stage ${stage}`);
      return { type: "m.login.dummy" };
    },
  );
  assert(response.user_id.startsWith(`@${username}:`), response.user_id);
  assert(response.access_token && response.device_id, "tokens issued");
  userId = response.user_id;
  session = response;
});

await check("taken usernames are reported unavailable", async () => {
  // The SDK turns the server's 400 M_USER_IN_USE into `false`.
  assert((await anonymous.isUsernameAvailable(username)) === false, "taken name is unavailable");
  await expectError(anonymous.isUsernameAvailable("not valid!"), "M_INVALID_USERNAME", 400);
});

const client = () => createClient({ baseUrl, userId, accessToken: session.access_token, deviceId: session.device_id });

await check("whoami and capabilities with the registration token", async () => {
  const me = await client().whoami();
  assert(me.user_id === userId && me.device_id === session.device_id, JSON.stringify(me));
  const capabilities = await client().getCapabilities();
  assert(capabilities["m.change_password"]?.enabled === true, JSON.stringify(capabilities));
});

let second;
await check("password login creates a second device", async () => {
  second = await anonymous.login("m.login.password", {
    identifier: { type: "m.id.user", user: username },
    password: PASSWORD,
    initial_device_display_name: "second",
  });
  assert(second.user_id === userId, second.user_id);
  const { devices } = await client().getDevices();
  assert(devices.length === 2, `two devices, got ${devices.length}`);
  assert(devices.some((d) => d.display_name === "second"), JSON.stringify(devices));
});

await check("a wrong password is M_FORBIDDEN", async () => {
  await expectError(
    anonymous.login("m.login.password", { identifier: { type: "m.id.user", user: username }, password: "nope" }),
    "M_FORBIDDEN",
    403,
  );
});

await check("renaming a device", async () => {
  await client().setDeviceDetails(second.device_id, { display_name: "renamed" });
  const { devices } = await client().getDevices();
  assert(devices.find((d) => d.device_id === second.device_id).display_name === "renamed", "renamed");
});

const passwordStage = (password) => (stage) => {
  assert(stage === "m.login.password", `stage ${stage}`);
  return { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password };
};

await check("deleting a device through user-interactive auth (m.login.password)", async () => {
  const c = client();
  await withInteractiveAuth(c, (auth) => c.deleteDevice(second.device_id, auth ?? undefined), passwordStage(PASSWORD));
  const { devices } = await c.getDevices();
  assert(devices.length === 1, `one device left, got ${devices.length}`);
  const gone = createClient({ baseUrl, userId, accessToken: second.access_token });
  await expectError(gone.whoami(), "M_UNKNOWN_TOKEN", 401);
});

await check("a wrong password fails the auth stage", async () => {
  const c = client();
  await expectError(
    withInteractiveAuth(c, (auth) => c.setPassword(auth ?? {}, "never", false), passwordStage("wrong")),
    "M_FORBIDDEN",
    401,
  );
});

await check("password change through user-interactive auth", async () => {
  const c = client();
  await withInteractiveAuth(c, (auth) => c.setPassword(auth ?? {}, "new js password", true), passwordStage(PASSWORD));
  await anonymous.login("m.login.password", { identifier: { type: "m.id.user", user: username }, password: "new js password" });
});

await check("refresh tokens", async () => {
  const login = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: username },
    password: "new js password",
    refresh_token: true,
  });
  assert(login.refresh_token && login.expires_in_ms > 0, JSON.stringify(login));
  const refreshed = await anonymous.refreshToken(login.refresh_token);
  assert(refreshed.access_token !== login.access_token, "a new access token");
  const me = await createClient({ baseUrl, accessToken: refreshed.access_token }).whoami();
  assert(me.user_id === userId, me.user_id);
});

await check("logout revokes the token", async () => {
  const c = client();
  await c.logout();
  await expectError(client().whoami(), "M_UNKNOWN_TOKEN", 401);
});

finish();
