// Rooms through matrix-js-sdk's request methods.
//
// Usage: node rooms.mjs BASE_URL
// Creates rooms, sends and reads events and state, invites, joins, edits,
// redacts, paginates, uploads and downloads media, sets pushers; prints "N passed, N failed" and exits non-zero on failure.

import { Direction } from "matrix-js-sdk";

import { assert, baseUrlArgument, check, expectError, finish, registerClient } from "./harness.mjs";

const baseUrl = baseUrlArgument("rooms.mjs");

const register = (name) => registerClient(baseUrl, name, "js rooms");

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

await check("uploadContent, then authenticated download and thumbnail", async () => {
  // A 2×1 PNG (red, blue).
  const png = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAADUlEQVR4nGP4zwAE/wEHAAH/4iOeWQAAAABJRU5ErkJggg==",
    "base64",
  );
  const { content_uri: mxc } = await alice.uploadContent(new Blob([png], { type: "image/png" }), { name: "pixel.png" });
  assert(mxc.startsWith("mxc://"), mxc);
  const download = bob.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
  assert(download.includes("/_matrix/client/v1/media/download/"), download);
  const anonymous = await fetch(download);
  assert(anonymous.status === 401, `unauthenticated download: ${anonymous.status}`);
  const response = await fetch(download, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
  assert(response.status === 200, `download: ${response.status}`);
  assert(response.headers.get("content-type") === "image/png", response.headers.get("content-type"));
  const bytes = Buffer.from(await response.arrayBuffer());
  assert(bytes.equals(png), "the download is the upload");
  const thumbnail = bob.mxcUrlToHttp(mxc, 1, 1, "crop", false, true, true);
  const thumb = await fetch(thumbnail, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
  assert(thumb.status === 200 && thumb.headers.get("content-type").startsWith("image/"), `thumbnail: ${thumb.status}`);
});

await check("setPusher and getPushers", async () => {
  await bob.setPusher({
    kind: "http",
    app_id: "fr.gouv.js",
    pushkey: `js-${suffix}`,
    app_display_name: "JS",
    device_display_name: "node",
    lang: "fr",
    data: { url: "https://push.example.org/_matrix/push/v1/notify", format: "event_id_only" },
  });
  const { pushers } = await bob.getPushers();
  assert(pushers.length === 1 && pushers[0].pushkey === `js-${suffix}`, JSON.stringify(pushers));
  await bob.setPusher({ kind: null, app_id: "fr.gouv.js", pushkey: `js-${suffix}` });
  assert((await bob.getPushers()).pushers.length === 0, "deleted");
});

finish();
