import type { Context } from 'koa';
import type { Routes } from '../http/app.ts';
import type { Requester } from '../http/context.ts';
import type { RoomReader } from '../rooms/reader.ts';

/**
 * The room endpoints' limits, one call each from rooms/routes.ts: which buckets an action pays
 * from (Synapse's rc_joins, rc_invites, rc_message / rc_admin_redaction, and a cap on rooms
 * created and joined per user per hour).
 */
export class RoomLimits {
  constructor(private routes: Routes, private reader: RoomReader, private serverName: string) {}

  private get limits() { return this.routes.limits; }

  /** createRoom: one room of the hour's allowance; each invitee as an invite. */
  async created(ctx: Context, invitees: string[]): Promise<void> {
    const me = ctx.state.requester as Requester;
    await this.limits.check('rooms_per_hour', me.userId, ctx);
    for (const invitee of invitees) {
      await this.limits.check('invites_per_issuer', me.userId, ctx);
      await this.limits.check('invites_per_user', invitee, ctx);
    }
  }

  /** A join: local or remote by the room's server name, and one room of the hour's allowance. */
  async joined(ctx: Context, target: string): Promise<void> {
    const me = ctx.state.requester as Requester;
    const colon = target.indexOf(':');
    const remote = colon >= 0 && target.slice(colon + 1) !== this.serverName;
    await this.limits.check(remote ? 'joins_remote' : 'joins_local', me.userId, ctx);
    await this.limits.check('rooms_per_hour', me.userId, ctx);
  }

  /** Invites into `roomId`: per room, per invitee, per inviter. */
  async invited(ctx: Context, roomId: string, invitees: string[]): Promise<void> {
    const me = ctx.state.requester as Requester;
    for (const invitee of invitees) {
      await this.limits.check('invites_per_room', roomId, ctx);
      await this.limits.check('invites_per_user', invitee, ctx);
      await this.limits.check('invites_per_issuer', me.userId, ctx);
    }
  }

  /** A redaction of one's own event is a message; of someone else's, a moderator's (admin) redaction. */
  async redacting(ctx: Context, roomId: string, eventId: string): Promise<void> {
    const me = ctx.state.requester as Requester;
    if (!this.limits.enabled) return;
    const target = await this.reader.event(me, roomId, eventId).catch(() => undefined);
    const theirs = target !== undefined && target.sender !== me.userId;
    await this.limits.check(theirs ? 'admin_redaction' : 'message', me.userId, ctx);
  }
}
