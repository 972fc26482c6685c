// Attack tests (issue 7): against a server with its default limits, one attack at a time —
// registration flood, login brute force (one account from many addresses; many accounts from one),
// message burst, a flood of /sync long-polls, a flood of /syncs answered at once — each bounded in requests and time, on loopback. Each
// is refused with the right error, the server's memory stays bounded, and ten normal users
// chatting meanwhile (from addresses of their own) are unharmed: none of their sends refused, and
// their send → sync round trip printed with p50/p99 and loosely bounded (the goal is < 200 ms p99
// on a quiet machine; this one is shared, so the bound is 1.5 s, or 4× the p99 measured without
// an attack just before when the machine is so busy that even that is slower).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { ATTACKS, closeAttackAgents, normalUsers, percentile, pidByDataDir, roundTrips, runAttack, type Answers, type NormalUsers } from '../../bench/attacks.ts';

/** Bounds per attack; the /sync flood holds many requests open at once. */
const BOUNDS: Record<string, { requests: number; concurrency: number }> = {
  '/sync long-poll flood (one user)': { requests: 1_500, concurrency: 32 },
  '/sync flood with an old since (one user)': { requests: 1_500, concurrency: 32 },
};
/** Enough to meet every limit many times over; the attacker shares this machine's two cores with the server. */
const DEFAULT_BOUNDS = { requests: 1_500, concurrency: 8 };
const DURATION_MS = 3_000;
/** Growth of the server's resident memory over one attack that counts as unbounded. */
const MEMORY_BOUND_MB = 100;
/** Loose: p99 of ~10 samples is their maximum, and this machine runs other work (load averages of
 *  10–16 on 2 cores were seen while writing this, where even the quiet p99 was 120–300 ms). */
const P99_BOUND_MS = 1_500;
const BASELINE_FACTOR = 4;

/** What each attack may get through at most with the default limits (its burst and a little refill), and the refusal it must meet. */
const EXPECT: Record<string, { through: string; atMost: number }> = {
  'registration flood (one address)': { through: '200', atMost: 5 },
  'login brute force (one account, 64 addresses)': { through: '403 M_FORBIDDEN', atMost: 6 },
  'login brute force (many accounts, one address)': { through: '403 M_FORBIDDEN', atMost: 6 },
  'message burst (one user, into the normal users\' room)': { through: '200', atMost: 40 },
  // RC_SYNC bounds both: a burst of 30, then 10 a second (long-polls that wait are bounded sooner,
  // by MAX_SYNCS_PER_TOKEN; they wait only while nothing happens to the attacker's account).
  '/sync long-poll flood (one user)': { through: '200', atMost: 80 },
  '/sync flood with an old since (one user)': { through: '200', atMost: 80 },
};

describe('attacks', () => {
  let s: TestServer;
  let victims: NormalUsers;
  let pid: number | undefined;
  let bound = P99_BOUND_MS;
  after(async () => { closeAttackAgents(); await s?.stop(); });

  test('start a server with the default limits, and the normal users', async () => {
    s = await startServer({ env: { RATE_LIMITS: 'on' } });
    pid = pidByDataDir(s.dataDir);
    assert.ok(pid, 'found the server process');
    victims = await normalUsers(s.baseUrl);
    const quiet = await roundTrips(victims, new Promise((r) => setTimeout(r, 2_000)));
    assert.deepEqual(quiet.failures, []);
    const p99 = percentile(quiet.ms, 0.99);
    bound = Math.max(P99_BOUND_MS, BASELINE_FACTOR * p99);
    console.log(`# no attack: normal users' send → sync p50 ${percentile(quiet.ms, 0.5).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (n=${quiet.ms.length}); p99 bound during attacks ${bound.toFixed(0)} ms`);
  });

  for (const attack of ATTACKS) {
    test(attack.name, async () => {
      const bounds = BOUNDS[attack.name] ?? DEFAULT_BOUNDS;
      const run = await runAttack(s.baseUrl, victims, attack, { ...bounds, durationMs: DURATION_MS, pid });
      const p50 = percentile(run.roundTrips, 0.5);
      const p99 = percentile(run.roundTrips, 0.99);
      const grew = run.rssAfterMb! - run.rssBeforeMb!;
      console.log(`# ${attack.name}: attacker got ${JSON.stringify(run.answers)}; normal users' send → sync p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (n=${run.roundTrips.length}); server RSS ${run.rssBeforeMb!.toFixed(0)} → ${run.rssAfterMb!.toFixed(0)} MB`);
      const answers: Answers = run.answers;
      const expect = EXPECT[attack.name]!;
      for (const key of Object.keys(answers)) {
        assert.ok(key === expect.through || key === '429 M_LIMIT_EXCEEDED', `the attacker got ${key} (${answers[key]}×): only ${expect.through} or 429 M_LIMIT_EXCEEDED may answer it`);
      }
      assert.ok((answers['429 M_LIMIT_EXCEEDED'] ?? 0) > 0, 'the attack was refused with 429 M_LIMIT_EXCEEDED');
      assert.ok((answers[expect.through] ?? 0) <= expect.atMost, `${answers[expect.through]} × ${expect.through} got through (at most ${expect.atMost})`);
      assert.ok(grew < MEMORY_BOUND_MB, `the server grew by ${grew.toFixed(0)} MB`);
      assert.deepEqual(run.failures, [], 'no normal user was refused or missed a message');
      assert.ok(run.roundTrips.length >= 5, `round trips measured (${run.roundTrips.length})`);
      assert.ok(p99 < bound, `p99 ${p99.toFixed(0)} ms (bound ${bound.toFixed(0)} ms)`);
    });
  }
});
