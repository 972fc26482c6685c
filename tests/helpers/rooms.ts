// Setting up many rooms quickly: createRoom calls in parallel with bounded concurrency, so that a
// user in 500 rooms takes seconds, not minutes.
import { api, type Credentials } from './client.ts';

/** Runs `fn` for 0..n-1, at most `concurrency` at a time; results in index order. */
export async function inParallel<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) out[i] = await fn(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

/** Creates `n` rooms as `who` (body per room), `concurrency` requests at a time; returns their IDs. */
export async function createRooms(
  baseUrl: string, who: Credentials, n: number, body: (i: number) => Record<string, unknown> = () => ({}), concurrency = 8,
): Promise<string[]> {
  return inParallel(n, concurrency, async (i) => {
    const res = await api(baseUrl, 'POST', '/_matrix/client/v3/createRoom', { token: who.accessToken, body: body(i) });
    if (res.status !== 200) throw new Error(`createRoom ${i}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.room_id as string;
  });
}

/** Joins `who` to every room, `concurrency` requests at a time. */
export async function joinRooms(baseUrl: string, who: Credentials, roomIds: string[], concurrency = 8): Promise<void> {
  await inParallel(roomIds.length, concurrency, async (i) => {
    const res = await api(baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomIds[i]!)}`, { token: who.accessToken, body: {} });
    if (res.status !== 200) throw new Error(`join ${roomIds[i]}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  });
}
