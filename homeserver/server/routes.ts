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
 * which homeserver/media/ serves; end-to-end keys, to-device, typing, receipts and presence are
 * served too. v1.1 is the least modern clients accept; the features clients key on up to v1.11 are
 * served (threads v1.4, /timestamp_to_event v1.6, room version 11 v1.8, /relations recurse v1.10,
 * authenticated media v1.11). tests/integration/operations.test.ts fails if v1.11+ is claimed while
 * media is not served.
 */
export const SPEC_VERSIONS = ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'];

/** Discovery and what the server can do: versions, .well-known, capabilities. */
export function serverRoutes(r: Routes, config: Config): void {
  r.raw('get', '/_matrix/client/versions', () => ({
    versions: SPEC_VERSIONS,
    unstable_features: {
      'org.matrix.msc3440.stable': true, // threads
      'org.matrix.msc2285.stable': true, // private read receipts (homeserver/receipts/)
      'org.matrix.msc3916.stable': true, // authenticated media (issue 8: homeserver/media/)
    },
  }), { auth: 'optional' });

  r.raw('get', '/.well-known/matrix/client', () => ({ 'm.homeserver': { base_url: config.publicBaseUrl } }));
  r.raw('get', '/.well-known/matrix/server', () => {
    // issue 11: FEDERATION_WELL_KNOWN names it; else the public host on FEDERATION_PORT, or on 443 (Caddy).
    if (config.federation.wellKnown) return { 'm.server': config.federation.wellKnown };
    const url = new URL(config.publicBaseUrl);
    if (config.federation.port) return { 'm.server': `${url.hostname}:${config.federation.port}` };
    return { 'm.server': url.host.includes(':') ? url.host : `${url.host}:443` };
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
