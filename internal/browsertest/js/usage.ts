// A small app written against sss.d.ts: `npx tsc --noEmit -p .` must
// accept it. The @ts-expect-error lines check that the declarations
// refuse what the client does not offer.
import sss, { connect, Status, SubStatus, SSSError, compareUids } from "../../../server/sssjs/sss.js";
import type { Client, Subscription, PresenceEvent, StatusInfo } from "../../../server/sssjs/sss.js";

interface ChatMessage {
  text: string;
  user: string | null;
}

export async function chat(room: string, user: string): Promise<Subscription> {
  const client: Client = connect("/ws", { user, reconnectBase: 250, askTimeout: 5000 });
  client.onStatus((status, previous, info: StatusInfo) => {
    if (status === Status.RETRY_INTERVAL && info.retryIn !== undefined) {
      console.log(`reconnecting in ${Math.ceil(info.retryIn / 1000)} s (was ${previous})`);
    }
    // @ts-expect-error: not a status
    if (status === "connected") return;
  });
  client.onBroadcast("announcement", (msg: { text: string }) => console.log(msg.text));
  client.onUser("dm", (msg: { from: string | null; text: string }, uid) => console.log(uid, msg.from, msg.text));
  client.onPresence((ev: PresenceEvent) => console.log(ev.channel, ev.event, ev.member.user ?? "anonymous"));
  client.onBoot((reason) => console.log("booted:", reason));
  await client.ready;

  const history = await client.ask<{ uid: string; msg: ChatMessage }[]>("history", { room, limit: 100 });
  const newest = history.at(-1)?.uid;
  const sub = await client.subscribe(room, {
    ...(newest !== undefined ? { fromUid: newest } : {}),
    on: { message: (msg: ChatMessage, uid) => console.log(uid, msg.user, msg.text) },
    onStatus: (status, _previous, error) => {
      if (status === SubStatus.NOT_RECOVERABLE) console.log("reload the room:", error?.code);
    },
  });
  const off = sub.on("*", (msg, uid, s) => console.log(s.channel, uid, msg));
  off();
  if (newest !== undefined && sub.lastUid !== null && (compareUids(sub.lastUid, newest) ?? 0) < 0) {
    throw new Error("went back in time");
  }
  try {
    client.tell("post", { room, text: "hello" });
  } catch (e) {
    if (e instanceof SSSError && e.code === "not_connected") await client.whenReady();
  }
  // @ts-expect-error: tell has no reply
  const nothing: Promise<unknown> = client.tell("post", { room, text: "x" });
  // @ts-expect-error: no such option
  connect("/ws", { retryInterval: 5000 });
  // @ts-expect-error: the channel is read-only
  sub.channel = "other";
  void nothing;
  void sss.connect;
  return sub;
}
