// Helpers of the end-to-end encryption scripts: matrix-js-sdk clients with
// Rust crypto on a given server, and waits bounded in time.

import { ClientEvent, createClient, RoomEvent } from "matrix-js-sdk";

export const password = "js e2ee password";

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A logged-in client of the server at `baseUrl` with Rust crypto, syncing; added to `started`. */
export async function startCryptoClient(baseUrl, credentials, started) {
  const client = createClient({
    baseUrl,
    userId: credentials.user_id,
    accessToken: credentials.access_token,
    deviceId: credentials.device_id,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve) => {
    client.on(ClientEvent.Sync, (state) => {
      if (state === "PREPARED") resolve();
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await withTimeout(prepared, 20000, "first sync");
  started.push(client);
  return client;
}

export async function registerUser(baseUrl, name) {
  const anonymous = createClient({ baseUrl });
  return anonymous.registerRequest({ username: name, password, auth: { type: "m.login.dummy" } });
}

export async function loginUser(baseUrl, userId) {
  const anonymous = createClient({ baseUrl });
  return anonymous.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password });
}

/** Resolves with the decrypted event in `roomId` whose clear body is `body`. */
export function waitForDecrypted(client, roomId, body, ms = 20000) {
  const found = new Promise((resolve) => {
    const look = async (event) => {
      if (event.getRoomId() !== roomId) return;
      await client.decryptEventIfNeeded(event);
      if (event.getType() === "m.room.message" && event.getContent().body === body) resolve(event);
    };
    client.on(RoomEvent.Timeline, (event) => void look(event));
    // Already there (arrived before we listened)?
    const room = client.getRoom(roomId);
    for (const event of room?.getLiveTimeline().getEvents() ?? []) void look(event);
  });
  return withTimeout(found, ms, `decrypting "${body}" on ${client.getUserId()}/${client.getDeviceId()}`);
}

/** Polls until `condition()` holds. */
export async function eventually(condition, what, ms = 20000) {
  const poll = (async () => {
    for (;;) {
      if (await condition()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return withTimeout(poll, ms, what);
}

export async function seesDevice(observer, userId, deviceId) {
  const devices = await observer.getCrypto().getUserDeviceInfo([userId], true);
  return devices.get(userId)?.has(deviceId) ?? false;
}

/** Resolves when the client's own membership in the room is `membership`. */
export async function waitForMembership(client, roomId, membership, ms = 20000) {
  const reached = new Promise((resolve) => {
    const test = () => client.getRoom(roomId)?.getMyMembership() === membership;
    if (test()) return resolve();
    client.on(ClientEvent.Room, () => test() && resolve());
    client.on(RoomEvent.MyMembership, () => test() && resolve());
  });
  return withTimeout(reached, ms, `${membership} of ${client.getUserId()}`);
}

/** Resolves when the client sees `userId` joined to `roomId` (before sharing a room key with them). */
export function waitForMemberJoined(client, roomId, userId, ms = 20000) {
  const joined = new Promise((resolve) => {
    const test = () => client.getRoom(roomId)?.getMember(userId)?.membership === "join";
    if (test()) return resolve();
    client.on(RoomEvent.Timeline, () => test() && resolve());
  });
  return withTimeout(joined, ms, `${client.getUserId()} sees ${userId} joined`);
}
