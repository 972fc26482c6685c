// GET /_matrix/client/versions           spec versions and unstable features served
// GET /.well-known/matrix/client         client discovery (the homeserver's base URL)
// GET /.well-known/matrix/server         server discovery (federation host:port)
// GET /_matrix/client/v3/capabilities    what the server lets clients do (room versions, profile fields, …)
import type { Routes } from '../http/app.ts';
import type { Config } from '../config.ts';
import { ROOM_VERSIONS } from '../protocol/room-versions.ts';
import { isSupportedVersion } from '../rooms/service.ts';

/**
 * Spec versions advertised. A client switches behaviour on these: from v1.11 on, Element and
 * matrix-js-sdk fetch every image and avatar through authenticated media (/_matrix/client/v1/media),
 * which this server does not serve yet, so v1.11 and later stay off until the media repository
 * exists. v1.1 is the least modern clients accept; up to v1.10 the features we serve (threads and
 * /threads v1.4, /timestamp_to_event v1.6, room version 11 v1.8, /relations recurse v1.10) are
 * the ones clients key on. Not served in any version yet: media, end-to-end keys and to-device
 * messages, typing, receipts and presence; clients see 404 M_UNRECOGNIZED for those and degrade.
 * tests/integration/operations.test.ts fails if v1.11+ is claimed while media is not served.
 */
export const SPEC_VERSIONS = ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10'];

/** Discovery and what the server can do: versions, .well-known, capabilities. */
export function serverRoutes(r: Routes, config: Config): void {
  r.raw('get', '/_matrix/client/versions', () => ({
    versions: SPEC_VERSIONS,
    unstable_features: {
      'org.matrix.msc3440.stable': true, // threads
      'org.matrix.msc2285.stable': false, // private read receipts: no receipts yet
      'org.matrix.msc3916.stable': true, // authenticated media (issue 8: homeserver/media/)
    },
  }), { auth: 'optional' });

  r.raw('get', '/.well-known/matrix/client', () => ({ 'm.homeserver': { base_url: config.publicBaseUrl } }));
  r.raw('get', '/.well-known/matrix/server', () => {
    const host = new URL(config.publicBaseUrl).host;
    return { 'm.server': host.includes(':') ? host : `${host}:443` };
  });

  r.client('get', '/capabilities', () => ({
    capabilities: {
      'm.change_password': { enabled: true },
      'm.room_versions': {
        default: config.defaultRoomVersion,
        available: Object.fromEntries(Object.values(ROOM_VERSIONS).filter(isSupportedVersion).map((v) => [v.id, 'stable'])),
      },
      'm.set_displayname': { enabled: true },
      'm.set_avatar_url': { enabled: true },
      'm.profile_fields': { enabled: true, allowed: ['displayname', 'avatar_url'] },
      'm.3pid_changes': { enabled: !!config.smtp.host }, // issue 7: e-mail addresses need outgoing mail
      'm.get_login_token': { enabled: false },
    },
  }), { auth: true });
}
