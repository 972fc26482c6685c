// Crash safety: several clients send, the server is SIGKILLed mid-stream and restarted; every send
// that got a 200 is there exactly once, in order, and retried transactions are not duplicated.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

// Both backends in the default run; TEST_BACKEND picks one (the suite's embedded pass).
for (const embedded of [false, true].filter((e) => !process.env.TEST_BACKEND || (process.env.TEST_BACKEND === 'embedded') === e)) {
  describe(`crash safety on ${embedded ? 'embedded' : 'external'} PostgreSQL`, () => {
    test('acknowledged sends survive SIGKILL exactly once, in order', async () => {
      const server = await startServer({ embedded });
      try {
        const users: Credentials[] = [];
        for (let i = 0; i < 4; i++) users.push(await registerUser(server.baseUrl));
        const roomId = (await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id as string;
        for (const u of users.slice(1)) {
          assert.equal((await api(server.baseUrl, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken })).status, 200);
        }

        const acked = new Map<string, string[]>();
        const unacked = new Map<string, { txn: string; body: string }>();
        let stop = false;
        const sender = async (u: Credentials, idx: number) => {
          const mine: string[] = [];
          acked.set(u.userId, mine);
          for (let i = 0; !stop; i++) {
            const body = `u${idx}-m${i}`;
            const txn = `t${idx}-${i}`;
            try {
              const res = await api(server.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, {
                token: u.accessToken, body: { msgtype: 'm.text', body },
              });
              if (res.status === 200) mine.push(body);
              else unacked.set(u.userId, { txn, body });
            } catch {
              unacked.set(u.userId, { txn, body });
              return;
            }
          }
        };
        const running = users.map((u, i) => sender(u, i));
        await new Promise((r) => setTimeout(r, 1500));
        await server.kill();
        stop = true;
        await Promise.all(running);
        const total = [...acked.values()].reduce((n, l) => n + l.length, 0);
        assert.ok(total > 20, `enough sends before the crash (${total})`);

        await server.restart();
        // A client retries its unacknowledged send with the same transaction id.
        for (const [userId, { txn, body }] of unacked) {
          const u = users.find((x) => x.userId === userId)!;
          const res = await api(server.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, {
            token: u.accessToken, body: { msgtype: 'm.text', body },
          });
          assert.equal(res.status, 200);
        }

        const seen: string[] = [];
        let from: string | undefined;
        for (;;) {
          const q = `dir=f&limit=500${from ? `&from=${from}` : ''}`;
          const page = await api(server.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?${q}`, { token: users[0]!.accessToken });
          assert.equal(page.status, 200);
          for (const e of page.body.chunk) if (e.type === 'm.room.message') seen.push(e.content.body);
          if (!page.body.end || page.body.chunk.length === 0) break;
          from = page.body.end;
        }
        for (const [userId, mine] of acked) {
          const idx = users.findIndex((u) => u.userId === userId);
          const theirs = seen.filter((b) => b.startsWith(`u${idx}-`));
          const retried = unacked.get(userId);
          const expected = retried ? [...mine, retried.body] : mine;
          assert.deepEqual(theirs, expected, `${userId}: every acknowledged send once, in order`);
        }
      } finally {
        await server.stop();
      }
    });
  });
}
