// The password-hash gate (issue 7): hashes run a few at a time; past the waiting room, 429 at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HashGate } from '../../homeserver/accounts/hash-gate.ts';
import { MatrixError } from '../../homeserver/http/errors.ts';

test('at most `concurrency` run at once, the rest wait their turn in order; past `maxWaiting`, 429', async () => {
  const gate = new HashGate(2, 3);
  let running = 0;
  let most = 0;
  const order: number[] = [];
  const task = (i: number) => gate.run(async () => {
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, 20));
    running--;
    order.push(i);
    return i;
  });
  const accepted = [0, 1, 2, 3, 4].map(task); // two run, three wait
  await assert.rejects(task(5), (e: unknown) => e instanceof MatrixError && e.status === 429 && e.errcode === 'M_LIMIT_EXCEEDED');
  assert.deepEqual(await Promise.all(accepted), [0, 1, 2, 3, 4]);
  assert.equal(most, 2);
  assert.deepEqual(order.slice(2), [2, 3, 4], 'waiters run in arrival order');
  // A failing task gives its slot back.
  await assert.rejects(gate.run(async () => { throw new Error('boom'); }));
  assert.equal(await gate.run(async () => 'after'), 'after');
});
