"""An old client's session (/initialSync, then the /events stream) and a user
ignoring another, through matrix-nio.

Usage: python reading.py BASE_URL
matrix-nio has no methods for the deprecated endpoints nor for the ignore
list: those go through its raw `send`; everything else (registration, rooms,
messages, to-device, sync) through its own methods. Prints "N passed, N failed"
and exits non-zero on failure.
"""

import asyncio
import json
import sys
import time
import traceback

from nio import (
    AsyncClient,
    InviteInfo,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
)

results = {"passed": 0, "failed": 0}


async def check(name, body):
    try:
        await body()
        results["passed"] += 1
        print(f"ok - {name}", flush=True)
    except Exception:  # noqa: BLE001 - every failure is reported, then counted
        results["failed"] += 1
        print(f"not ok - {name}: {traceback.format_exc()}", flush=True)


def expect(response, kind):
    assert isinstance(response, kind), f"expected {kind.__name__}, got {response!r}"
    return response


async def register(base_url, name):
    client = AsyncClient(base_url)
    expect(await client.register(name, "nio reading", "nio"), RegisterResponse)
    return client


async def raw(client, method, path, body=None):
    """A request the SDK has no method for, with the client's token."""
    headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body)
    response = await client.send(method, f"/_matrix/client/v3{path}", data, headers, timeout=30)
    answer = await response.json()
    assert response.status == 200, f"{method} {path}: {response.status} {answer}"
    return answer


async def say(client, room_id, body):
    content = {"msgtype": "m.text", "body": body}
    return expect(await client.room_send(room_id, "m.room.message", content), RoomSendResponse)


async def main(base_url):
    suffix = format(int(time.time() * 1000), "x")
    alice = await register(base_url, f"alice{suffix}")
    bob = await register(base_url, f"bob{suffix}")
    carol = await register(base_url, f"carol{suffix}")
    created = expect(await alice.room_create(name="Reading", preset=RoomPreset.public_chat), RoomCreateResponse)
    room_id = created.room_id
    expect(await bob.join(room_id), JoinResponse)
    expect(await carol.join(room_id), JoinResponse)

    async def old_client_session():
        await say(bob, room_id, "before")
        initial = await raw(alice, "GET", "/initialSync?limit=5")
        room = next(r for r in initial["rooms"] if r["room_id"] == room_id)
        assert room["membership"] == "join", room
        assert any(e["content"].get("body") == "before" for e in room["messages"]["chunk"]), room["messages"]
        waiting = asyncio.create_task(raw(alice, "GET", f"/events?from={initial['end']}&timeout=20000"))
        await asyncio.sleep(0.2)
        await say(bob, room_id, "after")
        stream = await asyncio.wait_for(waiting, 15)
        assert stream["start"] == initial["end"], stream
        messages = [e for e in stream["chunk"] if e["type"] == "m.room.message"]
        assert [(m["content"]["body"], m["room_id"]) for m in messages] == [("after", room_id)], stream
        following = await raw(alice, "GET", f"/events?from={stream['end']}&timeout=0")
        assert following["chunk"] == [], following

    async def ignoring_a_user():
        first = expect(await alice.sync(timeout=0, full_state=True), SyncResponse)
        ignore = {"ignored_users": {bob.user_id: {}}}
        await raw(alice, "PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list", ignore)
        await say(bob, room_id, "ignored words")
        bait = expect(await bob.room_create(), RoomCreateResponse).room_id
        expect(await bob.room_invite(bait, alice.user_id), RoomInviteResponse)
        ping = ToDeviceMessage("org.example.ping", alice.user_id, alice.device_id, {"ping": 1})
        expect(await bob.to_device(ping), ToDeviceResponse)
        await say(carol, room_id, "carol speaks")
        since = first.next_batch
        news = expect(await alice.sync(timeout=0, since=since), SyncResponse)
        timeline = news.rooms.join[room_id].timeline.events
        senders = [event.sender for event in timeline]
        assert carol.user_id in senders and bob.user_id not in senders, senders
        assert bait not in news.rooms.invite, list(news.rooms.invite)
        assert not isinstance(news.rooms.invite.get(bait), InviteInfo)
        assert news.to_device_events == [], news.to_device_events
        # The old client's stream leaves bob out as well.
        stream = await raw(alice, "GET", f"/events?from={since}&timeout=0")
        assert all(e.get("sender") != bob.user_id or "state_key" in e for e in stream["chunk"]), stream["chunk"]
        assert any(e.get("sender") == carol.user_id for e in stream["chunk"]), stream["chunk"]

    await check("old client: /initialSync, then /events long-polls from its end", old_client_session)
    await check("ignoring a user: their messages, invites and to-device messages never arrive", ignoring_a_user)
    for client in (alice, bob, carol):
        await client.close()
    print(f"{results['passed']} passed, {results['failed']} failed", flush=True)
    return results["failed"] == 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python reading.py BASE_URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if asyncio.run(main(sys.argv[1])) else 1)
