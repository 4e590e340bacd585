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

import { MatrixEvent, Method } from "matrix-js-sdk";

import {
  CryptoEvent,
  VerificationPhase,
  VerificationRequestEvent,
  VerifierEvent,
} from "matrix-js-sdk/lib/crypto-api/index.js";

import {
  eventually,
  loginUser,
  password,
  registerUser,
  seesDevice,
  startCryptoClient,
  waitForDecrypted,
  waitForMemberJoined,
  waitForMembership,
  withTimeout,
} from "./crypto_clients.mjs";
import { assert, baseUrlArgument, check, finish } from "./harness.mjs";

const baseUrl = baseUrlArgument("e2ee.mjs");
const suffix = Date.now().toString(36);
const started = [];
const startClient = (credentials) => startCryptoClient(baseUrl, credentials, started);
const register = (name) => registerUser(baseUrl, name);
const login = (userId) => loginUser(baseUrl, userId);

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
  await waitForMemberJoined(alice, roomId, bob.getUserId());
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
