import { MatrixError } from '../http/errors.ts';
import { Topic } from '../subscriptions/topic.ts';
import type { NewPusher, PusherRow, PusherStore } from './store.ts';

/** Spec limits (pusher.yaml) and ours, so that one user cannot store or make us send much. */
const MAX_APP_ID_CHARS = 64;
const MAX_PUSHKEY_BYTES = 512;
const MAX_TEXT_CHARS = 1024;
const MAX_DATA_BYTES = 16 * 1024;
export const MAX_PUSHERS_PER_USER = 50;

/** The path every HTTP pusher's URL ends with (Push Gateway API). */
export const NOTIFY_PATH = '/_matrix/push/v1/notify';

/** A pusher as GET /pushers shows it. */
export interface ClientPusher {
  pushkey: string;
  kind: string;
  app_id: string;
  app_display_name: string;
  device_display_name: string;
  profile_tag?: string;
  lang: string;
  data: Record<string, unknown>;
}

/** A checked POST /pushers/set body of a non-null kind. */
export interface PusherRequest extends NewPusher {
  append: boolean;
}

function invalid(msg: string): MatrixError {
  return new MatrixError(400, 'M_INVALID_PARAM', msg);
}

/**
 * The checks of a pusher beyond its JSON types: known kind, lengths, and for http an http(s) `url`
 * ending in /_matrix/push/v1/notify (Synapse requires that path; a gateway behind a path prefix is
 * allowed too). Any host is allowed: operators run gateways anywhere, the sender bounds each call.
 */
export function checkPusher(p: PusherRequest): void {
  if (p.kind === 'email') {
    // Synapse takes an email pusher only for an address bound to the account; this server binds none.
    throw new MatrixError(400, 'M_THREEPID_NOT_FOUND', 'Email not found: this server has no email address bound to your account');
  }
  if (p.kind !== 'http') throw invalid(`Unknown pusher kind ${JSON.stringify(p.kind).slice(0, 80)}: only "http" (and null to delete)`);
  if (!p.app_id) throw invalid('app_id may not be empty');
  if (p.app_id.length > MAX_APP_ID_CHARS) throw invalid(`app_id is longer than ${MAX_APP_ID_CHARS} characters`);
  if (!p.pushkey) throw invalid('pushkey may not be empty');
  if (Buffer.byteLength(p.pushkey) > MAX_PUSHKEY_BYTES) throw invalid(`pushkey is longer than ${MAX_PUSHKEY_BYTES} bytes`);
  for (const [name, value] of [['app_display_name', p.app_display_name], ['device_display_name', p.device_display_name], ['lang', p.lang], ['profile_tag', p.profile_tag ?? '']] as const) {
    if (value.length > MAX_TEXT_CHARS) throw invalid(`${name} is longer than ${MAX_TEXT_CHARS} characters`);
  }
  if (Buffer.byteLength(JSON.stringify(p.data)) > MAX_DATA_BYTES) throw invalid(`data is larger than ${MAX_DATA_BYTES} bytes`);
  const url = p.data.url;
  if (url === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', "'url' required in data for HTTP pusher");
  if (typeof url !== 'string') throw invalid("'url' must be a string");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid("'url' is not a URL");
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw invalid("'url' must be an http or https URL");
  if (!parsed.pathname.endsWith(NOTIFY_PATH)) throw invalid(`'url' must have a path of '${NOTIFY_PATH}'`);
  if (p.data.format !== undefined && typeof p.data.format !== 'string') throw new MatrixError(400, 'M_BAD_JSON', "'format' must be a string");
}

export function toClient(r: PusherRow): ClientPusher {
  const out: ClientPusher = {
    pushkey: r.pushkey,
    kind: r.kind,
    app_id: r.app_id,
    app_display_name: r.app_display_name,
    device_display_name: r.device_display_name,
    lang: r.lang,
    data: r.data,
  };
  if (r.profile_tag !== null) out.profile_tag = r.profile_tag;
  return out;
}

/** Pushers: per (app_id, pushkey, user); removed with the device that set them or the account. */
export class PusherService {
  /** Pusher ids set or removed here: the sender (if it runs on this worker) takes the change at once. */
  readonly changed = new Topic<number[]>('pushers changed');

  /**
   * `startAt`: the stream position a new pusher starts after (what is staged already is not sent
   * to a phone that registered later).
   */
  constructor(private store: PusherStore, private startAt: () => number) {}

  async list(userId: string): Promise<ClientPusher[]> {
    return (await this.store.byUser(userId)).map(toClient);
  }

  /** Creates or updates the user's pusher; unless `append`, the same pushkey of other users goes. */
  async set(userId: string, deviceId: string | null, p: PusherRequest): Promise<void> {
    checkPusher(p);
    const { append, ...fields } = p;
    const r = await this.store.upsert(userId, deviceId, fields, append, this.startAt(), MAX_PUSHERS_PER_USER);
    if (r === 'limit') throw invalid(`Too many pushers: at most ${MAX_PUSHERS_PER_USER} per account`);
    await this.publish([r.row.id, ...r.removed]);
  }

  async remove(userId: string, appId: string, pushkey: string): Promise<void> {
    await this.publish(await this.store.remove(userId, appId, pushkey));
  }

  /** The devices were logged out (or deleted): their pushers go too. */
  async removeForDevices(userId: string, deviceIds: string[]): Promise<void> {
    await this.publish(await this.store.removeForDevices(userId, deviceIds));
  }

  /** The account is being deactivated. */
  async removeUser(userId: string): Promise<void> {
    await this.publish(await this.store.removeUser(userId));
  }

  private async publish(ids: number[]): Promise<void> {
    if (ids.length) await this.changed.publish(ids);
  }
}
