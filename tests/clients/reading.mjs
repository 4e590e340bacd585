// An old client's session (/initialSync, then the /events stream) and a
// user ignoring another, through matrix-js-sdk.
//
// Usage: node reading.mjs BASE_URL
// The old client reads through the SDK's authenticated requests (the SDK no
// longer has methods for these deprecated endpoints); the ignoring user runs
// the SDK's own sync loop. Prints "N passed, N failed" and exits non-zero on failure.

import { ClientEvent, Method, RoomEvent } from "matrix-js-sdk";

import { assert, baseUrlArgument, check, finish, registerClient } from "./harness.mjs";
import { withTimeout } from "./crypto_clients.mjs";

const baseUrl = baseUrlArgument("reading.mjs");

const register = (name) => registerClient(baseUrl, name, "js reading");

const suffix = Date.now().toString(36);
const alice = await register(`alice${suffix}`);
const bob = await register(`bob${suffix}`);
const carol = await register(`carol${suffix}`);
const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Reading" });
await bob.joinRoom(roomId, { syncRoom: false });
await carol.joinRoom(roomId, { syncRoom: false });

await check("old client: /initialSync, then /events long-polls from its end", async () => {
  await bob.sendMessage(roomId, { msgtype: "m.text", body: "before" });
  const initial = await alice.http.authedRequest(Method.Get, "/initialSync", { limit: "5" });
  const room = initial.rooms.find((r) => r.room_id === roomId);
  assert(room?.membership === "join", JSON.stringify(initial.rooms));
  assert(room.messages.chunk.some((e) => e.content?.body === "before"), JSON.stringify(room.messages));
  assert(room.state.some((e) => e.type === "m.room.name" && e.content.name === "Reading"), "state");
  const waiting = alice.http.authedRequest(Method.Get, "/events", { from: initial.end, timeout: "20000" });
  await new Promise((resolve) => setTimeout(resolve, 200));
  await bob.sendMessage(roomId, { msgtype: "m.text", body: "after" });
  const stream = await withTimeout(waiting, 15000, "/events");
  assert(stream.start === initial.end, `${stream.start} vs ${initial.end}`);
  const message = stream.chunk.find((e) => e.type === "m.room.message");
  assert(message?.content.body === "after" && message.room_id === roomId, JSON.stringify(stream.chunk));
  const next = await alice.http.authedRequest(Method.Get, "/events", { from: stream.end, timeout: "0" });
  assert(next.chunk.length === 0, JSON.stringify(next.chunk));
});

await check("old client: room /initialSync and peeking a world-readable room", async () => {
  const { room_id: open } = await bob.createRoom({
    preset: "public_chat",
    initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } }],
  });
  await bob.sendMessage(open, { msgtype: "m.text", body: "readable by all" });
  const peek = await alice.http.authedRequest(Method.Get, `/rooms/${encodeURIComponent(open)}/initialSync`);
  assert(peek.messages.chunk.some((e) => e.content?.body === "readable by all"), JSON.stringify(peek.messages));
  assert(peek.membership === undefined, `not a member: ${peek.membership}`);
  const waiting = alice.http.authedRequest(Method.Get, "/events", { room_id: open, from: peek.messages.end, timeout: "20000" });
  await new Promise((resolve) => setTimeout(resolve, 200));
  await bob.sendMessage(open, { msgtype: "m.text", body: "news for peekers" });
  const stream = await withTimeout(waiting, 15000, "/events?room_id");
  assert(stream.chunk.some((e) => e.content?.body === "news for peekers" && e.room_id === open), JSON.stringify(stream.chunk));
});

await check("ignoring a user: their messages, invites and to-device messages never reach the SDK", async () => {
  const synced = new Promise((resolve) => alice.on(ClientEvent.Sync, (state) => state === "PREPARED" && resolve()));
  await alice.startClient({ initialSyncLimit: 5 });
  await withTimeout(synced, 20000, "first sync");
  await alice.setIgnoredUsers([bob.getUserId()]);
  assert(alice.isUserIgnored(bob.getUserId()), "the SDK sees the ignore list come back through sync");
  const seen = [];
  alice.on(RoomEvent.Timeline, (event) => seen.push(event));
  const toDevice = [];
  alice.on(ClientEvent.ToDeviceEvent, (event) => toDevice.push(event));
  const invites = [];
  alice.on(RoomEvent.MyMembership, (room, membership) => membership === "invite" && invites.push(room.roomId));

  await bob.sendMessage(roomId, { msgtype: "m.text", body: "ignored words" });
  const { room_id: bait } = await bob.createRoom({ preset: "private_chat" });
  await bob.invite(bait, alice.getUserId());
  await bob.sendToDevice("org.example.ping", new Map([[alice.getUserId(), new Map([[alice.getDeviceId(), { ping: 1 }]])]]));
  // Carol's message comes after all of bob's: once it is in, bob's had their chance.
  const arrived = new Promise((resolve) =>
    alice.on(RoomEvent.Timeline, (event) => event.getContent().body === "carol speaks" && resolve()),
  );
  await carol.sendMessage(roomId, { msgtype: "m.text", body: "carol speaks" });
  await withTimeout(arrived, 15000, "carol's message");
  assert(!seen.some((event) => event.getSender() === bob.getUserId()), seen.map((e) => e.getSender()).join(", "));
  assert(invites.length === 0 && !alice.getRoom(bait), `invites: ${invites}`);
  assert(toDevice.length === 0, `to-device: ${toDevice.map((e) => e.getType())}`);
  alice.stopClient();
});

finish();
