// End-to-end encryption with matrix-js-sdk's Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm): the server only carries keys and
// ciphertext, and real clients must still understand each other.
//
// Usage: node e2ee.mjs BASE_URL
// 1. two users, one device each, exchange messages in an encrypted room; the
//    server's copy of each message is `m.room.encrypted`;
// 2. a second device of one user, logged in later, decrypts new messages;
// 3. cross-signing is bootstrapped; the other user sees the device signed by
//    its owner, then verifies the user interactively (SAS over the room and
//    to-device messages) and sees the device as verified;
// 4. a key backup is made, the first device logs out, a new device restores
//    the backup and decrypts the old messages.
// Prints "N passed, N failed" and exits non-zero on any failure.

import { ClientEvent, createClient, MatrixEvent, Method, RoomEvent } from "matrix-js-sdk";

import {
  CryptoEvent,
  VerificationPhase,
  VerificationRequestEvent,
  VerifierEvent,
} from "matrix-js-sdk/lib/crypto-api/index.js";

import { assert, baseUrlArgument, check, finish } from "./harness.mjs";

const baseUrl = baseUrlArgument("e2ee.mjs");
const password = "js e2ee password";
const suffix = Date.now().toString(36);
const started = [];

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A logged-in client with Rust crypto, syncing. */
async function startClient(credentials) {
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

async function register(name) {
  const anonymous = createClient({ baseUrl });
  return anonymous.registerRequest({ username: name, password, auth: { type: "m.login.dummy" } });
}

async function login(userId) {
  const anonymous = createClient({ baseUrl });
  return anonymous.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password });
}

/** Resolves with the decrypted body of the first event in `roomId` whose clear body is `body`. */
function waitForDecrypted(client, roomId, body, ms = 20000) {
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
async function eventually(condition, what, ms = 20000) {
  const poll = (async () => {
    for (;;) {
      if (await condition()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return withTimeout(poll, ms, what);
}

async function seesDevice(observer, userId, deviceId) {
  const devices = await observer.getCrypto().getUserDeviceInfo([userId], true);
  return devices.get(userId)?.has(deviceId) ?? false;
}

/** Resolves when the client's own membership in the room is `membership`. */
async function waitForMembership(client, roomId, membership) {
  const reached = new Promise((resolve) => {
    const test = () => client.getRoom(roomId)?.getMyMembership() === membership;
    if (test()) return resolve();
    client.on(ClientEvent.Room, () => test() && resolve());
    client.on(RoomEvent.MyMembership, () => test() && resolve());
  });
  return withTimeout(reached, 20000, `${membership} of ${client.getUserId()}`);
}

const aliceCredentials = await register(`alice${suffix}`);
const bobCredentials = await register(`bob${suffix}`);
let alice;
let bob;
let roomId;
let firstSecretId;

await check("both users start with Rust crypto and upload their device keys", async () => {
  alice = await startClient(aliceCredentials);
  bob = await startClient(bobCredentials);
  await eventually(() => seesDevice(alice, bob.getUserId(), bob.getDeviceId()), "alice sees bob's device keys");
});

await check("an encrypted room: each sends, the other decrypts, the server stores ciphertext", async () => {
  const response = await alice.createRoom({
    preset: "private_chat",
    invite: [bob.getUserId()],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  roomId = response.room_id;
  await waitForMembership(alice, roomId, "join");
  await waitForMembership(bob, roomId, "invite");
  await bob.joinRoom(roomId);
  await waitForMembership(bob, roomId, "join");
  // Alice's client must see bob joined before it shares the room key with him.
  await withTimeout(
    new Promise((resolve) => {
      const test = () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join";
      if (test()) return resolve();
      alice.on(RoomEvent.Timeline, () => test() && resolve());
    }),
    20000,
    "alice sees bob's join",
  );
  const bobSees = waitForDecrypted(bob, roomId, "secret hello");
  const sent = await alice.sendMessage(roomId, { msgtype: "m.text", body: "secret hello" });
  firstSecretId = sent.event_id;
  const event = await bobSees;
  assert(event.isEncrypted(), "bob's copy was encrypted");
  const aliceSees = waitForDecrypted(alice, roomId, "secret reply");
  await bob.sendMessage(roomId, { msgtype: "m.text", body: "secret reply" });
  await aliceSees;
  const raw = await bob.fetchRoomEvent(roomId, firstSecretId);
  assert(raw.type === "m.room.encrypted", `stored as ${raw.type}`);
  assert(!JSON.stringify(raw).includes("secret hello"), "no plaintext on the server");
});

let bobSecond;
await check("a second device logged in later decrypts new messages", async () => {
  bobSecond = await startClient(await login(bob.getUserId()));
  // Alice learns of the new device through device_lists and a key query.
  await eventually(() => seesDevice(alice, bob.getUserId(), bobSecond.getDeviceId()), "alice sees bob's second device");
  const secondSees = waitForDecrypted(bobSecond, roomId, "for both devices");
  await alice.sendMessage(roomId, { msgtype: "m.text", body: "for both devices" });
  await secondSees;
});

await check("cross-signing: bob bootstraps it and alice sees his device signed by him", async () => {
  const crypto = bob.getCrypto();
  await crypto.bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: bob.getUserId() }, password });
    },
  });
  const status = await crypto.getCrossSigningStatus();
  assert(status.publicKeysOnDevice && status.privateKeysCachedLocally.masterKey, JSON.stringify(status));
  await eventually(async () => {
    const seen = await alice.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bob.getDeviceId());
    return seen?.signedByOwner === true;
  }, "alice sees bob's device cross-signed by bob");
  const identity = await alice.getCrypto().getUserVerificationStatus(bob.getUserId());
  assert(identity.isCrossSigningVerified() === false, "alice has not verified bob's identity herself");
});

/** Resolves when `request` reaches `phase`. */
function reachPhase(request, phase, what) {
  const reached = new Promise((resolve) => {
    if (request.phase === phase) return resolve();
    request.on(VerificationRequestEvent.Change, () => request.phase === phase && resolve());
  });
  return withTimeout(reached, 20000, what);
}

await check("interactive verification (SAS): alice then sees bob's device as verified", async () => {
  await alice.getCrypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: alice.getUserId() }, password });
    },
  });
  const bobReceives = withTimeout(
    new Promise((resolve) => bob.on(CryptoEvent.VerificationRequestReceived, resolve)),
    20000,
    "bob receives the verification request",
  );
  const aliceRequest = await alice.getCrypto().requestVerificationDM(bob.getUserId(), roomId);
  const bobRequest = await bobReceives;
  await bobRequest.accept();
  await reachPhase(aliceRequest, VerificationPhase.Ready, "alice's request is ready");
  const aliceVerifier = await aliceRequest.startVerification("m.sas.v1");
  await reachPhase(bobRequest, VerificationPhase.Started, "bob sees the SAS start");
  const bobVerifier = bobRequest.verifier;
  for (const verifier of [aliceVerifier, bobVerifier]) {
    verifier.on(VerifierEvent.ShowSas, (sas) => void sas.confirm());
  }
  await withTimeout(Promise.all([aliceVerifier.verify(), bobVerifier.verify()]), 30000, "both sides confirm the SAS");
  await eventually(async () => {
    const status = await alice.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bob.getDeviceId());
    return status?.isVerified() === true;
  }, "alice sees bob's device as verified");
  // Alice's user-signing key signed bob's master key on the server.
  await eventually(async () => {
    const identity = await alice.getCrypto().getUserVerificationStatus(bob.getUserId());
    return identity.isCrossSigningVerified();
  }, "alice trusts bob's identity through cross-signing");
});

await check("key backup: a new device restores the backup and decrypts old messages", async () => {
  const crypto = bob.getCrypto();
  await crypto.resetKeyBackup();
  // Enabling the new backup finishes in the background; this waits for it.
  const backupCheck = await crypto.checkKeyBackupAndEnable();
  assert(backupCheck?.trustInfo.trusted, `the new backup is trusted: ${JSON.stringify(backupCheck?.trustInfo)}`);
  const version = await crypto.getActiveSessionBackupVersion();
  assert(version, "a backup version is active");
  await eventually(async () => {
    const info = await bob.http.authedRequest(Method.Get, "/room_keys/version");
    return info.version === version && info.count > 0;
  }, "bob's room keys reach the backup");
  const privateKey = await crypto.getSessionBackupPrivateKey();
  assert(privateKey, "the backup key is known to bob's first device");
  bob.stopClient();
  await bob.logout(true);

  const bobThird = await startClient(await login(bob.getUserId()));
  await bobThird.getCrypto().storeSessionBackupPrivateKey(privateKey, version);
  const result = await bobThird.getCrypto().restoreKeyBackup();
  assert(result.imported > 0, `imported ${JSON.stringify(result)}`);
  const raw = await bobThird.fetchRoomEvent(roomId, firstSecretId);
  const event = new MatrixEvent({ ...raw, room_id: roomId });
  await bobThird.decryptEventIfNeeded(event);
  assert(event.getContent().body === "secret hello", `decrypted ${JSON.stringify(event.getContent())}`);
});

for (const client of started) client.stopClient();
finish();
