// GET /voip/turnServer                              TURN credentials ({} when no TURN server is configured)
// GET /thirdparty/protocols                          bridged protocols (none: no application services)
// GET /thirdparty/protocol/{protocol}                one protocol (404)
// GET /thirdparty/location[/{protocol}], /thirdparty/user[/{protocol}]   lookups (404: nothing bridged)
import type { Routes } from '../http/app.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import { single } from '../http/params.ts';

/** Bridges and calls: what a server without application services or a TURN server answers. */
export function thirdPartyRoutes(r: Routes): void {
  // Synapse answers {} when it has no TURN server configured; so does this server (it has no TURN setting).
  r.client('get', '/voip/turnServer', () => ({}), { auth: true });

  r.client('get', '/thirdparty/protocols', () => ({}), { auth: true });
  r.client('get', '/thirdparty/protocol/:protocol', () => {
    throw notFound('Unknown protocol');
  }, { auth: true });
  r.client('get', '/thirdparty/location/:protocol', () => {
    throw notFound('No portal rooms were found');
  }, { auth: true });
  r.client('get', '/thirdparty/user/:protocol', () => {
    throw notFound('No users were found');
  }, { auth: true });
  r.client('get', '/thirdparty/location', (ctx) => {
    if (single(ctx, 'alias') === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: alias');
    throw notFound('No third-party locations were found');
  }, { auth: true });
  r.client('get', '/thirdparty/user', (ctx) => {
    if (single(ctx, 'userid') === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: userid');
    throw notFound('No third-party users were found');
  }, { auth: true });
}
