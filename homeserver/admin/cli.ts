// npm run admin -- <command>: the first admin and registration tokens without a UI or a running
// server (issue 9). The same configuration as the server (environment, CONFIG_FILE): DATABASE_URL
// when set, else the embedded PostgreSQL in DATA_DIR — the running server's, or started here for
// the occasion and stopped again. Migrations run first (a database the server never saw works).
//
//   create-user NAME [--role ROLE] [--displayname TEXT]   password from stdin (piped) or a prompt
//   set-role USER ROLE                                    give an existing user a role
//   create-token [--token T] [--uses N] [--expires WHEN]  WHEN: ISO date, ms since epoch, or 7d / 12h / 30m
//   list-tokens
//
// Every action is written to the audit log as `cli:<os user>`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pino } from 'pino';
import { loadConfig, type Config } from '../config.ts';
import { StartupError } from '../startup-error.ts';
import { connect, migrate, type Db } from '../storage/db.ts';
import { dataDirHolder, lockDataDir } from '../storage/data-dir.ts';
import { alive, readPidFile, startEmbeddedPostgres } from '../storage/embedded.ts';
import { MatrixError } from '../http/errors.ts';
import { AccountService } from '../accounts/service.ts';
import { AccountStore } from '../accounts/store.ts';
import { AuditLog } from './audit.ts';
import { AuditStore } from './audit-store.ts';
import { RoleService } from './roles.ts';
import { RoleStore } from './roles-store.ts';
import { randomRegistrationToken } from './synapse-routes.ts';

const DATABASE = 'homeserver';
const log = pino({ level: process.env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });
const USAGE = `usage: npm run admin -- create-user NAME [--role ROLE] [--displayname TEXT]
       npm run admin -- set-role USER ROLE
       npm run admin -- create-token [--token TOKEN] [--uses N] [--expires DATE|7d|12h|30m]
       npm run admin -- list-tokens`;

async function openDb(config: Config): Promise<{ db: Db; release: () => Promise<void> }> {
  if (config.databaseUrl) {
    const db = connect(config.databaseUrl, { poolMax: 2, log });
    return { db, release: () => db.destroy() };
  }
  const holder = dataDirHolder(config.dataDir);
  if (holder) {
    const running = readPidFile(path.join(config.dataDir, 'pg'));
    if (!running || !alive(running.pid)) throw new StartupError(`the homeserver (pid ${holder}) holds DATA_DIR ${config.dataDir} but its PostgreSQL is not running; try again in a moment`);
    const db = connect({ host: running.socketDir, port: 5432, user: 'postgres', database: DATABASE }, { poolMax: 2, log });
    return { db, release: () => db.destroy() };
  }
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const unlock = lockDataDir(config.dataDir); // no server may start on it meanwhile
  try {
    const pg = await startEmbeddedPostgres({ dataDir: config.dataDir });
    const db = connect(pg.connection, { poolMax: 2, log });
    return { db, release: async () => { await db.destroy(); await pg.stop(); unlock(); } };
  } catch (err) { unlock(); throw err; }
}

/** `--name value` options and positional arguments. */
function parseArgs(argv: string[]): { positional: string[]; options: Map<string, string> } {
  const positional: string[] = [];
  const options = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) options.set(a.slice(2, eq), a.slice(eq + 1));
      else {
        const v = argv[i + 1];
        if (v === undefined || v.startsWith('--')) throw new StartupError(`${a} needs a value\n${USAGE}`);
        options.set(a.slice(2), v);
        i++;
      }
    } else positional.push(a);
  }
  return { positional, options };
}

/** The password: the first line of stdin when piped, else asked for twice on the terminal (not echoed). */
async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
    if (!line) throw new StartupError('no password on stdin (pipe it in: echo "$PASSWORD" | npm run admin -- create-user …)');
    return line;
  }
  const ask = (prompt: string) => new Promise<string>((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const out = rl as unknown as { _writeToOutput: (s: string) => void; output: NodeJS.WritableStream };
    out._writeToOutput = (s: string) => { if (s.startsWith(prompt)) out.output.write(prompt); };
    rl.question(prompt, (answer) => { rl.close(); process.stderr.write('\n'); resolve(answer); });
  });
  const first = await ask('Password: ');
  if ((await ask('Again: ')) !== first) throw new StartupError('the passwords differ');
  return first;
}

/** ISO date, ms since epoch, or a duration from now (7d, 12h, 30m). */
export function parseExpiry(value: string, now = Date.now()): number {
  const rel = /^(\d{1,6})([dhm])$/.exec(value);
  if (rel) return now + Number(rel[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[rel[2] as 'd' | 'h' | 'm'];
  if (/^\d{10,15}$/.test(value)) return Number(value);
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new StartupError(`--expires ${value}: an ISO date (2026-12-31T00:00:00Z), ms since epoch, or 7d / 12h / 30m`);
  return t;
}

async function run(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (!command || command === 'help' || command === '--help') { process.stdout.write(`${USAGE}\n`); return; }
  const { positional, options } = parseArgs(rest);
  const config = loadConfig();
  const actor = `cli:${os.userInfo().username}`;
  const password = command === 'create-user' ? await readPassword() : undefined;
  const { db, release } = await openDb(config);
  try {
    await migrate(db, log);
    const accounts = new AccountService(new AccountStore(db), config, log);
    const roles = new RoleService(new RoleStore(db));
    const audit = new AuditLog(new AuditStore(db));
    const record = (action: string, target: string, details: Record<string, unknown>) => audit.record({ actor, action, target, ip: null, outcome: 'ok', details });
    if (command === 'create-user') {
      const name = positional[0];
      if (!name) throw new StartupError(USAGE);
      const localpart = (accounts.localpartOf(name) ?? name).toLowerCase();
      const roleName = options.get('role') ?? 'user';
      if (!(await roles.role(roleName))) throw new StartupError(`--role ${roleName}: no such role (${(await roles.roles()).map((r) => r.name).join(', ')})`);
      await accounts.checkUsername(localpart);
      accounts.checkPasswordShape(password);
      accounts.checkPasswordPolicy(password!, localpart);
      const { user_id } = await accounts.register({ localpart, password: password!, displayname: options.get('displayname'), inhibitLogin: true });
      if (roleName !== 'user') await roles.assignAsOperator(user_id, roleName, actor);
      await record('user.create', user_id, { role: roleName, via: 'cli' });
      process.stdout.write(`created ${user_id} with the role ${roleName}\n`);
    } else if (command === 'set-role') {
      const [who, roleName] = positional;
      if (!who || !roleName) throw new StartupError(USAGE);
      const userId = who.startsWith('@') ? who : accounts.userId(who);
      if (!(await roles.roleOf(userId))) throw new StartupError(`no user ${userId}`);
      await roles.assignAsOperator(userId, roleName, actor);
      await record('role.assign', userId, { role: roleName, via: 'cli' });
      process.stdout.write(`${userId} now has the role ${roleName}\n`);
    } else if (command === 'create-token') {
      const token = options.get('token') ?? randomRegistrationToken();
      if (!/^[A-Za-z0-9._~-]{1,64}$/.test(token)) throw new StartupError('--token: at most 64 characters from A-Z, a-z, 0-9, . _ ~ -');
      const usesRaw = options.get('uses');
      if (usesRaw !== undefined && !/^\d{1,9}$/.test(usesRaw)) throw new StartupError(`--uses ${usesRaw}: a whole number`);
      const uses = usesRaw === undefined ? null : Number(usesRaw);
      const expires = options.has('expires') ? parseExpiry(options.get('expires')!) : null;
      if (expires !== null && expires <= Date.now()) throw new StartupError('--expires: must be in the future');
      if (!(await accounts.insertRegistrationToken({ token, usesAllowed: uses, expiryTime: expires }))) throw new StartupError(`the token ${token} exists already`);
      await record('registration_token.create', token, { uses_allowed: uses, expiry_time: expires, via: 'cli' });
      process.stdout.write(`${token}\n`);
      process.stderr.write(`registration token created: ${uses === null ? 'unlimited uses' : `${uses} use(s)`}, ${expires === null ? 'never expires' : `expires ${new Date(expires).toISOString()}`}${config.registration === 'token' ? '' : ` (note: REGISTRATION=${config.registration}; tokens are asked for with REGISTRATION=token)`}\n`);
    } else if (command === 'list-tokens') {
      for (const t of await accounts.registrationTokens()) {
        process.stdout.write(`${t.token}\tuses ${t.completed}/${t.uses_allowed ?? '∞'}\t${t.expiry_time === null ? 'never expires' : `expires ${new Date(Number(t.expiry_time)).toISOString()}`}\n`);
      }
    } else {
      throw new StartupError(`unknown command ${command}\n${USAGE}`);
    }
  } finally {
    await release();
  }
}

run().then(() => process.exit(0), (err) => {
  const msg = err instanceof StartupError ? err.message : err instanceof MatrixError ? `${err.errcode}: ${err.message}` : `${process.argv[2]} failed: ${`${(err as Error).message ?? err}`.split('\n')[0]}`;
  process.stderr.write(`super-server: ${msg}\n`);
  process.exit(1);
});
