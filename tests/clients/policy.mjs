// The public-sector room rules through matrix-js-sdk, as Tchap-like clients
// create rooms: the access rule in initial_state.
//
// Usage: node policy.mjs BASE_URL (a server with [policy] access_rules on)
// Creates a DM, a private room and a forum; checks what the rules impose and
// refuse; prints "N passed, N failed" and exits non-zero on failure.

import { assert, baseUrlArgument, check, expectError, finish, registerClient } from "./harness.mjs";

const baseUrl = baseUrlArgument("policy.mjs");

const register = (name) => registerClient(baseUrl, name, "js policy");

const accessRule = (rule) => ({ type: "im.vector.room.access_rules", state_key: "", content: { rule } });
const encryption = { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } };

const suffix = Date.now().toString(36);
// The first account of a server is its admin, whom the rules do not hold.
await register(`admin${suffix}`);
const agent = await register(`agent${suffix}`);
const colleague = await register(`colleague${suffix}`);
const third = await register(`third${suffix}`);

await check("a DM: direct rule, encrypted, two members, no name", async () => {
  const { room_id: dm } = await agent.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    visibility: "private",
    invite: [colleague.getUserId()],
    initial_state: [accessRule("direct"), encryption],
  });
  const rule = await agent.getStateEvent(dm, "im.vector.room.access_rules", "");
  assert(rule.rule === "direct", JSON.stringify(rule));
  await colleague.joinRoom(dm, { syncRoom: false });
  await expectError(agent.invite(dm, third.getUserId()), "M_FORBIDDEN", 403);
  await expectError(agent.setRoomName(dm, "us"), "M_FORBIDDEN", 403);
});

await check("a DM whose rule is not direct is refused", async () => {
  await expectError(
    agent.createRoom({ is_direct: true, invite: [colleague.getUserId()], initial_state: [accessRule("restricted")] }),
    "M_INVALID_PARAM",
    400,
  );
});

await check("a private room: restricted, encrypted, invited history, imposed power levels", async () => {
  const { room_id: room } = await agent.createRoom({
    preset: "private_chat",
    visibility: "private",
    name: "Bureau",
    initial_state: [accessRule("restricted"), encryption],
  });
  const history = await agent.getStateEvent(room, "m.room.history_visibility", "");
  assert(history.history_visibility === "invited", JSON.stringify(history));
  const levels = await agent.getStateEvent(room, "m.room.power_levels", "");
  assert(levels.invite === 50 && levels.state_default === 100, JSON.stringify(levels));
});

await check("a forum: published, listed, never encrypted", async () => {
  const { room_id: forum } = await agent.createRoom({
    preset: "public_chat",
    visibility: "public",
    name: `Forum ${suffix}`,
    room_alias_name: `forum${suffix}`,
    initial_state: [accessRule("restricted")],
  });
  const { chunk } = await colleague.publicRooms({ filter: { generic_search_term: suffix } });
  assert(chunk.some((room) => room.room_id === forum), JSON.stringify(chunk));
  await expectError(agent.sendStateEvent(forum, "m.room.encryption", encryption.content, ""), "M_FORBIDDEN", 403);
  await colleague.joinRoom(forum, { syncRoom: false });
  const history = await agent.getStateEvent(forum, "m.room.history_visibility", "");
  assert(history.history_visibility === "shared", JSON.stringify(history));
});

finish();
