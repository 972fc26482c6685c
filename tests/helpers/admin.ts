// Helpers of the admin tests (issue 9): the admin CLI, logins, admin API calls.
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { rawApi } from './client.ts';
import { repoRoot, type TestServer } from './server.ts';

/** `npm run admin -- …args` against the server's database; stdin: `input`. */
export function adminCli(server: TestServer, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'homeserver/admin/cli.ts', ...args], {
      cwd: repoRoot, env: { ...process.env, ...server.env, LOG_LEVEL: 'warn' }, stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

export async function login(base: string, user: string, password: string): Promise<{ status: number; body: any }> {
  return rawApi(base, 'POST', '/_matrix/client/v3/login', undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password });
}

export async function loginToken(base: string, user: string, password: string): Promise<string> {
  const r = await login(base, user, password);
  assert.equal(r.status, 200, `login ${user}: ${JSON.stringify(r.body)}`);
  return r.body.access_token;
}

/** Creates (PUT v2) an account as `adminToken`, logs in; the token. */
export async function createUser(base: string, adminToken: string, localpart: string, password = `secret password ${localpart.length}x`): Promise<{ userId: string; token: string; password: string }> {
  const userId = `@${localpart}:localhost`;
  const r = await rawApi(base, 'PUT', `/_synapse/admin/v2/users/${encodeURIComponent(userId)}`, adminToken, { password, displayname: localpart });
  assert.equal(r.status, 201, `create ${userId}: ${JSON.stringify(r.body)}`);
  return { userId, token: await loginToken(base, localpart, password), password };
}

/** The audit entries, newest first (filtered as the query says). */
export async function audit(base: string, token: string, query = ''): Promise<any[]> {
  const r = await rawApi(base, 'GET', `/_super/admin/v1/audit?${/(^|&)limit=/.test(query) ? '' : 'limit=1000&'}${query}`, token);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
}
