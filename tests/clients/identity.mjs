// Identity by work email through matrix-js-sdk: registering with a validated
// address, logging in with it, finding a colleague by it through the
// identity service API this server answers, and inviting by email.
//
// Usage: node identity.mjs BASE_URL MAIL_DIR (a server with [email] set;
// MAIL_DIR is where the test SMTP server writes the mails it accepts, as JSON)
// Prints "N passed, N failed" and exits non-zero on failure.

import fs from "node:fs";
import path from "node:path";

import { createClient } from "matrix-js-sdk";

import { assert, baseUrlArgument, check, finish } from "./harness.mjs";

const baseUrl = baseUrlArgument("identity.mjs");
const mailDir = process.argv[3];
if (!mailDir) {
  console.error("usage: node identity.mjs BASE_URL MAIL_DIR");
  process.exit(2);
}
const password = "js identity";
const suffix = Date.now().toString(36);

/** The mails accepted so far, once there are `count` (30 s at most). */
async function mails(count) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const names = fs.readdirSync(mailDir).filter((name) => name.endsWith(".json")).sort();
    if (names.length >= count) {
      return names.map((name) => JSON.parse(fs.readFileSync(path.join(mailDir, name), "utf8")));
    }
    if (Date.now() > deadline) throw new Error(`${names.length} mails of ${count} arrived`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let mailsSeen = 0;
/** The next mail, which must be to `address`. */
async function nextMailTo(address) {
  mailsSeen += 1;
  const mail = (await mails(mailsSeen))[mailsSeen - 1];
  assert(JSON.stringify(mail.rcpt_tos) === JSON.stringify([address]), `a mail to ${address}: ${JSON.stringify(mail)}`);
  return mail;
}

/** Follows a mail's link (it points at http://localhost, the test's link base) on this server. */
async function follow(mail) {
  const link = mail.text.match(/http:\/\/localhost(\S+)/);
  assert(link, `a link in ${mail.text}`);
  const response = await fetch(baseUrl + link[1]);
  assert(response.status === 200, `the link answers ${response.status}`);
}

/** Registers `address` as a user would: the mail, its link, then the registration. */
async function registerByEmail(address) {
  const anonymous = createClient({ baseUrl });
  const clientSecret = `secret${suffix}${mailsSeen}`;
  const { sid } = await anonymous.requestRegisterEmailToken(address, clientSecret, 1);
  await follow(await nextMailTo(address));
  const creds = { sid, client_secret: clientSecret };
  const response = await anonymous.registerRequest({
    password,
    auth: { type: "m.login.email.identity", threepid_creds: creds, threepidCreds: creds },
  });
  return createClient({
    baseUrl,
    idBaseUrl: baseUrl,
    userId: response.user_id,
    accessToken: response.access_token,
    deviceId: response.device_id,
  });
}

// The first account of a server is its admin.
await createClient({ baseUrl }).registerRequest({ username: `admin${suffix}`, password, auth: { type: "m.login.dummy" } });

const address = `jean.dupont.${suffix}@interieur.gouv.fr`;
let jean;
await check("registers with a validated work address, which names the account", async () => {
  jean = await registerByEmail(address);
  assert(jean.getUserId().startsWith(`@jean.dupont.${suffix}-interieur.gouv.fr:`), jean.getUserId());
  const profile = await jean.getProfileInfo(jean.getUserId());
  assert(profile.displayname.endsWith("[Interieur]"), JSON.stringify(profile));
});

await check("logs in with the address", async () => {
  const response = await createClient({ baseUrl }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.thirdparty", medium: "email", address },
    password,
  });
  assert(response.user_id === jean.getUserId(), JSON.stringify(response));
});

let identityToken;
await check("finds a colleague by address through the identity service", async () => {
  const colleague = await registerByEmail(`marie.${suffix}@interieur.gouv.fr`);
  const registered = await colleague.registerWithIdentityServer(await colleague.getOpenIdToken());
  identityToken = registered.token;
  const found = await colleague.lookupThreePid("email", address, identityToken);
  assert(found.mxid === jean.getUserId(), JSON.stringify(found));
  const nobody = await colleague.lookupThreePid("email", `nobody.${suffix}@interieur.gouv.fr`, identityToken);
  assert(!nobody.mxid, JSON.stringify(nobody));
});

await check("invites by address; the invitee registers with it and joins", async () => {
  const inviter = createClient({
    baseUrl,
    idBaseUrl: baseUrl,
    userId: jean.getUserId(),
    accessToken: jean.getAccessToken(),
    identityServer: { getAccessToken: async () => identityToken },
  });
  const { room_id: room } = await inviter.createRoom({ name: "Réunion" });
  const newcomer = `paul.${suffix}@interieur.gouv.fr`;
  await inviter.inviteByThreePid(room, "email", newcomer);
  const invitation = await nextMailTo(newcomer);
  assert(invitation.subject.includes("Réunion"), invitation.subject);
  const paul = await registerByEmail(newcomer);
  await paul.joinRoom(room, { syncRoom: false });
  const members = await inviter.getJoinedRoomMembers(room);
  assert(Object.keys(members.joined).includes(paul.getUserId()), JSON.stringify(members));
});

finish();
