import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Topic } from '../../homeserver/subscriptions/topic.ts';

test('publish runs handlers in subscription order and awaits each', async () => {
  const t = new Topic<number>('numbers');
  const seen: string[] = [];
  t.subscribe(async (n) => {
    await new Promise((r) => setTimeout(r, 5));
    seen.push(`a${n}`);
  });
  t.subscribe((n) => seen.push(`b${n}`));
  await t.publish(1);
  assert.deepEqual(seen, ['a1', 'b1']);
});

test('unsubscribe removes only that handler; a failing handler rejects publish', async () => {
  const t = new Topic<string>('strings');
  const seen: string[] = [];
  const off = t.subscribe((s) => seen.push(`x${s}`));
  t.subscribe((s) => seen.push(`y${s}`));
  off();
  t.publishSync('1');
  assert.deepEqual(seen, ['y1']);
  t.subscribe(() => {
    throw new Error('boom');
  });
  await assert.rejects(t.publish('2'), /boom/);
});
