// Moderation's /_super/admin/v1 endpoints in the admin API's OpenAPI document (admin/openapi.ts):
// IP / CIDR bans, the reports triage queue and the message_user command.
import { describeAdminOperations } from '../admin/openapi.ts';

const str = { type: 'string' };
const int = { type: 'integer' };
const bool = { type: 'boolean' };
const nullable = (type: string) => ({ type: [type, 'null'] });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', properties, required, additionalProperties: false });
const q = (name: string, schema: unknown, description: string) => ({ name, in: 'query', required: false, schema, description });
const p = (name: string, description: string) => ({ name, in: 'path', required: true, schema: str, description });

export function describeModerationOperations(): void {
  describeAdminOperations({
    '/bans': {
      get: { summary: 'Every IP / CIDR ban (expired ones flagged)', permission: 'server.manage', response: obj({ bans: { type: 'array', items: ref('IpBan') } }) },
      post: {
        summary: 'Ban an address or range (the same range again replaces it); not one that contains your own address', permission: 'server.manage',
        body: obj({ cidr: str, reason: str, expires_ts: int, duration_ms: int }, ['cidr']), response: ref('IpBan'),
      },
    },
    '/bans/{id}': {
      get: { summary: 'One ban', permission: 'server.manage', params: [p('id', 'ban id')], response: ref('IpBan') },
      delete: { summary: 'Lift a ban', permission: 'server.manage', params: [p('id', 'ban id')], response: obj({}) },
    },
    '/reports': {
      get: {
        summary: 'The triage queue: reports of events, rooms and users', permission: 'reports.handle',
        params: [q('kind', { enum: ['event', 'room', 'user'] }, 'only this kind'), q('resolved', bool, 'resolved or open only'),
          q('room_id', str, 'in this room'), q('user_id', str, 'made by this user'), q('event_sender_user_id', str, 'about events of this sender'),
          q('dir', { enum: ['b', 'f'] }, 'b: newest first (default)'), q('from', int, 'next_token of the previous page'), q('limit', int, 'entries per page (at most 1000)')],
        response: obj({ reports: { type: 'array', items: ref('Report') }, total: int, next_token: int }),
      },
    },
    '/reports/{reportId}': { get: { summary: 'One report, with the reported event', permission: 'reports.handle', params: [p('reportId', 'report id')], response: ref('Report') } },
    '/reports/{reportId}/resolved': {
      put: { summary: 'Resolve or reopen a report', permission: 'reports.handle', params: [p('reportId', 'report id')], body: obj({ resolved: bool }, ['resolved']), response: obj({ resolved: bool }) },
    },
    '/commands/message_user': {
      post: { summary: "Send a server notice to a user (their server-notices room)", permission: 'notices.send', body: obj({ user_id: str, message: str }, ['user_id', 'message']), response: obj({ event_id: str, room_id: str }) },
    },
  }, {
    IpBan: obj({ id: int, cidr: str, reason: nullable('string'), created_by: str, created_ts: int, expires_ts: nullable('integer'), expired: bool }),
    Report: {
      type: 'object', description: "Synapse's event report shape, with the kind and the resolution",
      properties: {
        id: int, kind: { enum: ['event', 'room', 'user'] }, received_ts: int, room_id: nullable('string'), name: nullable('string'),
        canonical_alias: nullable('string'), event_id: nullable('string'), user_id: str, sender: nullable('string'), target_user_id: nullable('string'),
        reason: nullable('string'), score: nullable('integer'), resolved: bool, resolved_by: nullable('string'), resolved_ts: nullable('integer'),
        event_json: { type: ['object', 'null'] },
      },
    },
  });
}
