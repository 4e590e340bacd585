// End-to-end encryption across two servers, with matrix-js-sdk's Rust
// crypto: alice on the first server, bob on the second (conduit and
// conduit, or conduit and Synapse). The servers carry device keys, one-time
// key claims, to-device room keys and device-list changes between them.
//
// Usage: node e2ee_federation.mjs BASE_URL_A BASE_URL_B
// 1. each sees the other's device keys (a key query through the other server);
// 2. an encrypted DM: alice invites bob, each sends, the other decrypts;
// 3. bob logs in a second device: alice hears of it (a device-list update
//    over federation), and the new device decrypts what alice sends next;
// 4. bob bootstraps cross-signing: alice sees his device signed by him.
// Prints "N passed, N failed" and exits non-zero on any failure.

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
} from "./crypto_clients.mjs";
import { assert, check, finish } from "./harness.mjs";

const [baseUrlA, baseUrlB] = process.argv.slice(2);
if (!baseUrlA || !baseUrlB) {
  console.error("usage: node e2ee_federation.mjs BASE_URL_A BASE_URL_B");
  process.exit(2);
}
const suffix = Date.now().toString(36);
const started = [];
// Across servers, deliveries take a transaction each way: waits are longer.
const wait = 40000;

const alice = await startCryptoClient(baseUrlA, await registerUser(baseUrlA, `alice${suffix}`), started);
const bob = await startCryptoClient(baseUrlB, await registerUser(baseUrlB, `bob${suffix}`), started);
let roomId;

await check("each sees the other server's user's device keys", async () => {
  await eventually(() => seesDevice(alice, bob.getUserId(), bob.getDeviceId()), "alice sees bob's device", wait);
  await eventually(() => seesDevice(bob, alice.getUserId(), alice.getDeviceId()), "bob sees alice's device", wait);
});

await check("an encrypted DM across servers: each sends, the other decrypts", async () => {
  const response = await alice.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    invite: [bob.getUserId()],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  roomId = response.room_id;
  await waitForMembership(bob, roomId, "invite", wait);
  await bob.joinRoom(roomId);
  await waitForMembership(bob, roomId, "join", wait);
  await waitForMemberJoined(alice, roomId, bob.getUserId(), wait);
  const bobSees = waitForDecrypted(bob, roomId, "bonjour chiffré", wait);
  await alice.sendMessage(roomId, { msgtype: "m.text", body: "bonjour chiffré" });
  const event = await bobSees;
  assert(event.isEncrypted(), "bob's copy came encrypted");
  const aliceSees = waitForDecrypted(alice, roomId, "réponse chiffrée", wait);
  await bob.sendMessage(roomId, { msgtype: "m.text", body: "réponse chiffrée" });
  await aliceSees;
});

await check("a new device of bob is seen by alice and decrypts new messages", async () => {
  const bobSecond = await startCryptoClient(baseUrlB, await loginUser(baseUrlB, bob.getUserId()), started);
  await eventually(
    () => seesDevice(alice, bob.getUserId(), bobSecond.getDeviceId()),
    "alice sees bob's second device",
    wait,
  );
  const secondSees = waitForDecrypted(bobSecond, roomId, "pour tous tes appareils", wait);
  await alice.sendMessage(roomId, { msgtype: "m.text", body: "pour tous tes appareils" });
  await secondSees;
});

await check("cross-signing across servers: alice sees bob's device signed by bob", async () => {
  await bob.getCrypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: bob.getUserId() }, password });
    },
  });
  await eventually(
    async () => {
      const seen = await alice.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bob.getDeviceId());
      return seen?.signedByOwner === true;
    },
    "alice sees bob's device cross-signed by bob",
    wait,
  );
});

for (const client of started) client.stopClient();
finish();
