// Rooms through matrix-js-sdk's request methods.
//
// Usage: node rooms.mjs BASE_URL
// Creates rooms, sends and reads events and state, invites, joins, edits,
// redacts, paginates; prints "N passed, N failed" and exits non-zero on failure.

import { createClient, Direction } from "matrix-js-sdk";

import { assert, baseUrlArgument, check, expectError, finish } from "./harness.mjs";

const baseUrl = baseUrlArgument("rooms.mjs");

async function register(name) {
  const anonymous = createClient({ baseUrl });
  const response = await anonymous.registerRequest({ username: name, password: "js rooms", auth: { type: "m.login.dummy" } });
  return createClient({ baseUrl, userId: response.user_id, accessToken: response.access_token, deviceId: response.device_id });
}

const suffix = Date.now().toString(36);
const alice = await register(`alice${suffix}`);
const bob = await register(`bob${suffix}`);
let roomId;
let messageId;

await check("createRoom with name, topic, preset and alias", async () => {
  const response = await alice.createRoom({ name: "JS forum", topic: "from js", preset: "public_chat", room_alias_name: `js${suffix}` });
  roomId = response.room_id;
  assert(roomId.startsWith("!"), roomId);
  const name = await alice.getStateEvent(roomId, "m.room.name", "");
  assert(name.name === "JS forum", JSON.stringify(name));
  const resolved = await bob.getRoomIdForAlias(`#js${suffix}:${alice.getDomain()}`);
  assert(resolved.room_id === roomId, JSON.stringify(resolved));
});

await check("bob joins by alias; joined rooms and members agree", async () => {
  await bob.joinRoom(`#js${suffix}:${alice.getDomain()}`, { syncRoom: false });
  const { joined_rooms: joined } = await bob.getJoinedRooms();
  assert(joined.includes(roomId), JSON.stringify(joined));
  const members = await alice.getJoinedRoomMembers(roomId);
  assert(Object.keys(members.joined).length === 2, JSON.stringify(members));
});

await check("sendMessage and fetchRoomEvent", async () => {
  const response = await bob.sendMessage(roomId, { msgtype: "m.text", body: "hello from js" });
  messageId = response.event_id;
  const event = await alice.fetchRoomEvent(roomId, messageId);
  assert(event.content.body === "hello from js", JSON.stringify(event));
});

await check("edit is bundled, not applied", async () => {
  await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: "* hello again",
    "m.new_content": { msgtype: "m.text", body: "hello again" },
    "m.relates_to": { rel_type: "m.replace", event_id: messageId },
  });
  const event = await alice.fetchRoomEvent(roomId, messageId);
  assert(event.content.body === "hello from js", "content unchanged");
  assert(event.unsigned["m.relations"]["m.replace"].content["m.new_content"].body === "hello again", JSON.stringify(event.unsigned));
});

await check("messages pagination backwards", async () => {
  const page = await alice.createMessagesRequest(roomId, null, 5, Direction.Backward);
  assert(page.chunk.length === 5, `got ${page.chunk.length}`);
  assert(page.end, "more to come");
  const next = await alice.createMessagesRequest(roomId, page.end, 100, Direction.Backward);
  assert(next.chunk.at(-1).type === "m.room.create", "pagination reaches the create event");
});

await check("power levels stop bob renaming the room", async () => {
  await expectError(bob.setRoomName(roomId, "bob's"), "M_FORBIDDEN", 403);
  await alice.setRoomName(roomId, "renamed");
  const name = await bob.getStateEvent(roomId, "m.room.name", "");
  assert(name.name === "renamed", JSON.stringify(name));
});

await check("redaction by the moderator", async () => {
  await alice.redactEvent(roomId, messageId, undefined, { reason: "cleanup" });
  const event = await bob.fetchRoomEvent(roomId, messageId);
  assert(Object.keys(event.content).length === 0, JSON.stringify(event.content));
});

await check("private room: invite needed, then join and leave", async () => {
  const { room_id: privateRoom } = await alice.createRoom({ preset: "private_chat" });
  await expectError(bob.joinRoom(privateRoom, { syncRoom: false }), "M_FORBIDDEN", 403);
  await alice.invite(privateRoom, bob.getUserId());
  await bob.joinRoom(privateRoom, { syncRoom: false });
  await bob.leave(privateRoom);
  const { joined_rooms: joined } = await bob.getJoinedRooms();
  assert(!joined.includes(privateRoom), JSON.stringify(joined));
});

finish();
