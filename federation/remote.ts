// What our users ask of other servers: profiles, device keys, one-time keys, room directories,
// and to-device messages (queued as m.direct_to_device EDUs).
import { MatrixError } from '../homeserver/http/errors.ts';
import type { RemoteKeys } from '../homeserver/e2ee/keys.ts';
import type { Profile } from '../homeserver/rooms/service.ts';
import { FederationRequestError, type FederationClient } from './client.ts';
import type { FederationSender } from './sender.ts';

type Json = Record<string, unknown>;

export class RemoteQueries implements RemoteKeys {
  constructor(private client: FederationClient, private sender: FederationSender) {}

  /** GET /_matrix/federation/v1/query/profile: undefined when the server says there is no such user. */
  async profile(userId: string): Promise<Profile | undefined> {
    try {
      const res = await this.client.request(userId.slice(userId.indexOf(':') + 1), 'GET', `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(userId)}`);
      return {
        displayname: typeof res.displayname === 'string' ? res.displayname : null,
        avatar_url: typeof res.avatar_url === 'string' ? res.avatar_url : null,
      };
    } catch (err) {
      if (err instanceof FederationRequestError && err.status === 404) return undefined;
      throw new MatrixError(502, 'M_UNKNOWN', `Failed to fetch the profile from its server: ${(err as Error).message}`);
    }
  }

  query(server: string, deviceKeys: Record<string, string[]>, timeoutMs: number): Promise<Json> {
    return this.client.request(server, 'POST', '/_matrix/federation/v1/user/keys/query', { device_keys: deviceKeys }, timeoutMs);
  }

  claim(server: string, oneTimeKeys: Record<string, Record<string, string>>, timeoutMs: number): Promise<Json> {
    return this.client.request(server, 'POST', '/_matrix/federation/v1/user/keys/claim', { one_time_keys: oneTimeKeys }, timeoutMs);
  }

  async publicRooms(server: string, q: { limit?: number; since?: string; filter?: unknown; include_all_networks?: boolean; third_party_instance_id?: string }): Promise<Json> {
    try {
      if (q.filter === undefined && q.third_party_instance_id === undefined && !q.include_all_networks) {
        const params = new URLSearchParams();
        if (q.limit !== undefined) params.set('limit', String(q.limit));
        if (q.since !== undefined) params.set('since', q.since);
        const qs = params.toString();
        return await this.client.request(server, 'GET', `/_matrix/federation/v1/publicRooms${qs ? `?${qs}` : ''}`);
      }
      return await this.client.request(server, 'POST', '/_matrix/federation/v1/publicRooms', q);
    } catch (err) {
      throw new MatrixError(502, 'M_UNKNOWN', `Failed to fetch room list: ${(err as Error).message}`);
    }
  }

  /** To-device messages for other servers' users: one m.direct_to_device EDU per server, queued. */
  async toDevice(sender: string, type: string, messageId: string, byServer: Map<string, Record<string, Record<string, Json>>>): Promise<void> {
    await this.sender.queueEdus([...byServer].map(([destination, messages]) => ({
      destination,
      edu: { edu_type: 'm.direct_to_device', content: { sender, type, message_id: messageId, messages } },
    })));
  }
}
