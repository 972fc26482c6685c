import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

/** Every option: a default, an env name, a row in the README's table. */
export interface Config {
  serverName: string;
  port: number;
  bindAddress: string;
  publicBaseUrl: string;
  databaseUrl: string | undefined;
  dataDir: string;
  redisUrl: string | undefined;
  registration: 'open' | 'token' | 'closed';
  registrationSharedSecret: string | undefined;
  autoJoinRooms: string[];
  logLevel: string;
  maxRequestBytes: number;
  accessTokenLifetimeMs: number;
  defaultRoomVersion: string;
  uiDir: string;
}

type Env = Record<string, string | undefined>;

/** A YAML-free config file: `CONFIG_FILE` names a JSON file whose keys are the env names. */
function fileValues(env: Env): Env {
  const file = env.CONFIG_FILE;
  if (!file) return {};
  if (!existsSync(file)) throw new Error(`CONFIG_FILE ${file} does not exist`);
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
}

export function loadConfig(processEnv: Env = process.env): Config {
  // The environment wins over the file, so one file can serve several workers.
  const env: Env = { ...fileValues(processEnv), ...processEnv };
  const serverName = env.SERVER_NAME || 'localhost';
  const port = Number(env.PORT || 8008);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, got ${env.PORT}`);
  const registration = (env.REGISTRATION || 'open') as Config['registration'];
  if (!['open', 'token', 'closed'].includes(registration)) throw new Error(`REGISTRATION must be open, token or closed`);
  const autoJoin = env.AUTO_JOIN_ROOMS ?? `#global:${serverName}`;
  return {
    serverName,
    port,
    bindAddress: env.BIND_ADDRESS || '0.0.0.0',
    publicBaseUrl: (env.PUBLIC_BASEURL || `http://${serverName === 'localhost' ? `localhost:${port}` : serverName}`).replace(/\/+$/, ''),
    databaseUrl: env.DATABASE_URL || undefined,
    dataDir: path.resolve(env.DATA_DIR || './data'),
    redisUrl: env.REDIS_URL || undefined,
    registration,
    registrationSharedSecret: env.REGISTRATION_SHARED_SECRET || undefined,
    autoJoinRooms: autoJoin.split(',').map((s) => s.trim()).filter(Boolean),
    logLevel: env.LOG_LEVEL || 'info',
    maxRequestBytes: Number(env.MAX_REQUEST_BYTES || 1024 * 1024),
    accessTokenLifetimeMs: Number(env.ACCESS_TOKEN_LIFETIME_MS || 5 * 60 * 1000),
    defaultRoomVersion: env.DEFAULT_ROOM_VERSION || '10',
    uiDir: path.resolve(env.UI_DIR || '.'),
  };
}
