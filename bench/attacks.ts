// Attacks on a running homeserver, each bounded in requests and time, all on loopback, and a
// normal user's send → sync round trip measured meanwhile. Used by the attack tests
// (tests/attacks/attacks-flood.test.ts, which assert on the outcome) and by
// `npm run bench -- flood` (which prints it).
//
// Linux routes all of 127.0.0.0/8 to lo, so each party binds its sockets to a loopback address of
// its own: the normal users (127.0.0.2–11) never share the attacker's (127.0.1.x, 127.0.2.x)
// per-address buckets, as two people on the internet would not.
import fs from 'node:fs';
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const C = '/_matrix/client/v3';

export interface Res { status: number; body: any; headers: http.IncomingHttpHeaders }

const agents = new Map<string, http.Agent>();
function agentFor(localAddress: string): http.Agent {
  let a = agents.get(localAddress);
  if (!a) agents.set(localAddress, (a = new http.Agent({ keepAlive: true, localAddress, maxSockets: 256 })));
  return a;
}

/** Closes every keep-alive socket this module opened. */
export function closeAttackAgents(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

export function call(base: string, method: string, path: string, opts: { from: string; token?: string; body?: unknown; timeoutMs?: number }): Promise<Res> {
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), {
      method, agent: agentFor(opts.from), timeout: opts.timeoutMs ?? 60_000,
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export interface Account { userId: string; accessToken: string; password: string; from: string }

export async function register(base: string, from: string, localpart = `u${randomBytes(5).toString('hex')}`): Promise<Account> {
  const password = randomBytes(12).toString('base64url');
  const req = { username: localpart, password };
  let r = await call(base, 'POST', `${C}/register`, { from, body: req });
  if (r.status === 401) r = await call(base, 'POST', `${C}/register`, { from, body: { ...req, auth: { type: 'm.login.dummy', session: r.body.session } } });
  if (r.status !== 200) throw new Error(`register ${localpart} from ${from}: ${r.status} ${JSON.stringify(r.body)}`);
  return { userId: r.body.user_id, accessToken: r.body.access_token, password, from };
}

// ---- the normal users ------------------------------------------------------------------------

export interface NormalUsers { base: string; users: Account[]; roomId: string }

/** Ten people in one room, each from an address of their own (127.0.0.2–11). */
export async function normalUsers(base: string): Promise<NormalUsers> {
  const users: Account[] = [];
  for (let i = 0; i < 10; i++) users.push(await register(base, `127.0.0.${2 + i}`));
  const roomId = (await call(base, 'POST', `${C}/createRoom`, { from: users[0]!.from, token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id;
  for (const u of users.slice(1)) {
    const r = await call(base, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { from: u.from, token: u.accessToken });
    if (r.status !== 200) throw new Error(`join: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return { base, users, roomId };
}

/**
 * Round trips until `stop` resolves: one of the users sends (in turn, each at most about twice a
 * second, as people chatting fast would), and the first user's /sync long-poll sees it arrive.
 * Returns the round trips (ms) and any failure (a send that was refused, a sync that failed).
 */
export async function roundTrips(n: NormalUsers, stop: Promise<void>, gapMs = 50): Promise<{ ms: number[]; failures: string[] }> {
  const [observer] = n.users;
  const ms: number[] = [];
  const failures: string[] = [];
  let stopped = false;
  void stop.then(() => { stopped = true; });
  let since = (await call(n.base, 'GET', `${C}/sync?timeout=0`, { from: observer!.from, token: observer!.accessToken })).body.next_batch as string;
  const seen = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const r = await call(n.base, 'GET', `${C}/sync?timeout=5000&since=${encodeURIComponent(since)}`, { from: observer!.from, token: observer!.accessToken }).catch((e: Error) => ({ status: 0, body: { error: e.message }, headers: {} }));
      if (r.status !== 200) { failures.push(`sync ${r.status} ${JSON.stringify(r.body)}`); await new Promise((res) => setTimeout(res, 200)); continue; }
      since = r.body.next_batch;
      const at = performance.now();
      for (const e of r.body.rooms?.join?.[n.roomId]?.timeline?.events ?? []) {
        const body = e.content?.body;
        if (typeof body === 'string' && body.startsWith('rt-')) { seen.set(body, at); waiters.get(body)?.(); }
      }
    }
  })();
  for (let i = 0; !stopped; i++) {
    const sender = n.users[i % n.users.length]!;
    const body = `rt-${i}-${randomBytes(3).toString('hex')}`;
    const arrived = new Promise<void>((res) => waiters.set(body, res));
    const t0 = performance.now();
    const r = await call(n.base, 'PUT', `${C}/rooms/${encodeURIComponent(n.roomId)}/send/m.room.message/${body}`, { from: sender.from, token: sender.accessToken, body: { msgtype: 'm.text', body } });
    if (r.status !== 200) failures.push(`send ${r.status} ${JSON.stringify(r.body)}`);
    else {
      const timedOut = await Promise.race([arrived.then(() => false), new Promise<boolean>((res) => setTimeout(() => res(true), 10_000))]);
      if (timedOut) failures.push(`${body} never arrived in /sync`);
      else ms.push(seen.get(body)! - t0);
    }
    waiters.delete(body);
    await new Promise((res) => setTimeout(res, gapMs));
  }
  polling = false;
  await poller;
  return { ms, failures };
}

// ---- the attacks -----------------------------------------------------------------------------

/** What the server answered the attacker: counts by "status errcode". */
export type Answers = Record<string, number>;

export interface Attack {
  name: string;
  /** Runs until `requests` are made or `until` (ms since epoch) passes; `concurrency` at once. */
  run(base: string, victims: NormalUsers, opts: { requests: number; until: number; concurrency: number }): Promise<Answers>;
}

/** Runs `one(i)` with `concurrency` in flight until `requests` or `until`, counting the answers. */
async function flood(opts: { requests: number; until: number; concurrency: number }, one: (i: number) => Promise<Res>): Promise<Answers> {
  const answers: Answers = {};
  let next = 0;
  await Promise.all(Array.from({ length: opts.concurrency }, async () => {
    while (next < opts.requests && Date.now() < opts.until) {
      const r = await one(next++).catch((e: Error) => ({ status: 0, body: { errcode: e.message }, headers: {} }));
      const key = `${r.status} ${r.body?.errcode ?? ''}`.trim();
      answers[key] = (answers[key] ?? 0) + 1;
    }
  }));
  return answers;
}

export const ATTACKS: Attack[] = [
  {
    name: 'registration flood (one address)',
    run: (base, _v, opts) => flood(opts, async (i) => {
      const req = { username: `flood${i}_${randomBytes(3).toString('hex')}`, password: 'flood password 1' };
      const r = await call(base, 'POST', `${C}/register`, { from: '127.0.1.1', body: req });
      if (r.status !== 401) return r;
      return call(base, 'POST', `${C}/register`, { from: '127.0.1.1', body: { ...req, auth: { type: 'm.login.dummy', session: r.body.session } } });
    }),
  },
  {
    name: 'login brute force (one account, 64 addresses)',
    run: (base, v, opts) => flood(opts, (i) => call(base, 'POST', `${C}/login`, {
      from: `127.0.2.${1 + (i % 64)}`,
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: v.users[1]!.userId }, password: `guess-${i}` },
    })),
  },
  {
    name: 'login brute force (many accounts, one address)',
    run: (base, _v, opts) => flood(opts, (i) => call(base, 'POST', `${C}/login`, {
      from: '127.0.1.2',
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: `victim${i}` }, password: 'password123' },
    })),
  },
  {
    name: 'message burst (one user, into the normal users\' room)',
    run: async (base, v, opts) => {
      const spammer = await register(base, '127.0.1.3');
      await call(base, 'POST', `${C}/join/${encodeURIComponent(v.roomId)}`, { from: spammer.from, token: spammer.accessToken });
      return flood(opts, (i) => call(base, 'PUT', `${C}/rooms/${encodeURIComponent(v.roomId)}/send/m.room.message/spam${i}`, {
        from: spammer.from, token: spammer.accessToken, body: { msgtype: 'm.text', body: `spam ${i}` },
      }));
    },
  },
  {
    name: '/sync long-poll flood (one user)',
    run: async (base, _v, opts) => {
      const syncer = await register(base, '127.0.1.4');
      // A since token after the syncer's own first changes (its presence going online), so the long-polls wait.
      let since = (await call(base, 'GET', `${C}/sync?timeout=0`, { from: syncer.from, token: syncer.accessToken })).body.next_batch;
      since = (await call(base, 'GET', `${C}/sync?timeout=0&since=${encodeURIComponent(since)}`, { from: syncer.from, token: syncer.accessToken })).body.next_batch;
      const left = Math.max(0, opts.until - Date.now());
      return flood(opts, () => call(base, 'GET', `${C}/sync?timeout=${Math.min(left, 5_000)}&since=${encodeURIComponent(since)}`, { from: syncer.from, token: syncer.accessToken }));
    },
  },
  {
    name: '/sync flood with an old since (one user)',
    run: async (base, _v, opts) => {
      // Something new after `since` (account data), so every /sync with it is answered at once.
      const syncer = await register(base, '127.0.1.5');
      const since = (await call(base, 'GET', `${C}/sync?timeout=0`, { from: syncer.from, token: syncer.accessToken })).body.next_batch;
      await call(base, 'PUT', `${C}/user/${encodeURIComponent(syncer.userId)}/account_data/org.example.flood`, { from: syncer.from, token: syncer.accessToken, body: { at: Date.now() } });
      return flood(opts, () => call(base, 'GET', `${C}/sync?timeout=5000&since=${encodeURIComponent(since)}`, { from: syncer.from, token: syncer.accessToken }));
    },
  },
];

export interface AttackRun {
  name: string;
  answers: Answers;
  roundTrips: number[];
  failures: string[];
  rssBeforeMb?: number;
  rssAfterMb?: number;
}

/** The server's resident memory (MB), from /proc. */
export function rssMb(pid: number): number {
  const kb = Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return kb / 1024;
}

/** One attack with the normal users' round trips measured meanwhile (and the server's memory, given its pid). */
export async function runAttack(base: string, victims: NormalUsers, attack: Attack, opts: { requests: number; durationMs: number; concurrency: number; pid?: number }): Promise<AttackRun> {
  const rssBeforeMb = opts.pid ? rssMb(opts.pid) : undefined;
  let done!: () => void;
  const over = new Promise<void>((r) => { done = r; });
  const trips = roundTrips(victims, over);
  await new Promise((r) => setTimeout(r, 300)); // the first round trips before the attack starts
  const answers = await attack.run(base, victims, { requests: opts.requests, until: Date.now() + opts.durationMs, concurrency: opts.concurrency }).finally(done);
  const rssAfterMb = opts.pid ? rssMb(opts.pid) : undefined;
  const { ms, failures } = await trips;
  return { name: attack.name, answers, roundTrips: ms, failures, rssBeforeMb, rssAfterMb };
}

/** The pid of the node process started with DATA_DIR=`dataDir` (the test helper does not report it). */
export function pidByDataDir(dataDir: string): number | undefined {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const env = fs.readFileSync(`/proc/${d}/environ`, 'utf8');
      if (env.split('\0').includes(`DATA_DIR=${dataDir}`) && fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim().startsWith('node')) return Number(d);
    } catch { /* gone, or not ours */ }
  }
  return undefined;
}

export function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]! : Number.NaN;
}
