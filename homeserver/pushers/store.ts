import type { Db } from '../storage/db.ts';

/** Advisory lock class of a user's pusher writes (the second key hashes the user id). */
const PUSHERS_LOCK = 7271900;

/** A stored pusher (table `pushers`, migration 009). */
export interface PusherRow {
  id: number;
  user_id: string;
  device_id: string | null;
  kind: string;
  app_id: string;
  pushkey: string;
  /** ms since epoch. */
  pushkey_ts: number;
  app_display_name: string;
  device_display_name: string;
  profile_tag: string | null;
  lang: string;
  /** The client's data object (url included). */
  data: Record<string, unknown>;
  sent_up_to: number;
  failing_since: number | null;
}

/** What a client sets (POST /pushers/set), checked by the service. */
export interface NewPusher {
  kind: string;
  app_id: string;
  pushkey: string;
  app_display_name: string;
  device_display_name: string;
  profile_tag: string | null;
  lang: string;
  data: Record<string, unknown>;
}

const COLUMNS = 'id, user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name, device_display_name, profile_tag, lang, data, sent_up_to, failing_since';

function toRow(r: Record<string, unknown>): PusherRow {
  return {
    id: Number(r.id),
    user_id: r.user_id as string,
    device_id: (r.device_id as string | null) ?? null,
    kind: r.kind as string,
    app_id: r.app_id as string,
    pushkey: r.pushkey as string,
    pushkey_ts: Number(r.pushkey_ts),
    app_display_name: r.app_display_name as string,
    device_display_name: r.device_display_name as string,
    profile_tag: (r.profile_tag as string | null) ?? null,
    lang: r.lang as string,
    data: JSON.parse(r.data as string) as Record<string, unknown>,
    sent_up_to: Number(r.sent_up_to),
    failing_since: r.failing_since === null || r.failing_since === undefined ? null : Number(r.failing_since),
  };
}

/** The pushers table: the only place that runs SQL on it. */
export class PusherStore {
  constructor(private db: Db) {}

  async byUser(userId: string): Promise<PusherRow[]> {
    const r = await this.db.raw(`SELECT ${COLUMNS} FROM pushers WHERE user_id = ? ORDER BY id`, [userId]);
    return r.rows.map(toRow);
  }

  /** Every pusher of a kind (the sender's working set). */
  async allOfKind(kind: string): Promise<PusherRow[]> {
    const r = await this.db.raw(`SELECT ${COLUMNS} FROM pushers WHERE kind = ? ORDER BY id`, [kind]);
    return r.rows.map(toRow);
  }

  async byId(id: number): Promise<PusherRow | undefined> {
    const r = await this.db.raw(`SELECT ${COLUMNS} FROM pushers WHERE id = ?`, [id]);
    return r.rows[0] ? toRow(r.rows[0]) : undefined;
  }

  /**
   * Creates or updates the user's pusher (app_id, pushkey), in one transaction holding the user's
   * lock: at most `maxPerUser` pushers per user; unless `append`, the same (app_id, pushkey) of
   * every other user is removed. A new pusher starts at `startAt` (what is already staged is not
   * sent); an updated one keeps its position. Returns the pusher, or 'limit' when the user has too
   * many, and the ids removed from other users.
   */
  async upsert(
    userId: string, deviceId: string | null, p: NewPusher, append: boolean, startAt: number, maxPerUser: number,
  ): Promise<{ row: PusherRow; removed: number[] } | 'limit'> {
    return this.db.transaction(async (trx) => {
      await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [PUSHERS_LOCK, userId]);
      const existing = await trx.raw('SELECT id FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?', [userId, p.app_id, p.pushkey]);
      if (!existing.rows[0]) {
        const count = await trx.raw('SELECT count(*)::int AS n FROM pushers WHERE user_id = ?', [userId]);
        if (count.rows[0].n >= maxPerUser) return 'limit' as const;
      }
      let removed: number[] = [];
      if (!append) {
        const d = await trx.raw('DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ? RETURNING id', [p.app_id, p.pushkey, userId]);
        removed = d.rows.map((x: { id: string }) => Number(x.id));
      }
      const r = await trx.raw(
        `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name, device_display_name, profile_tag, lang, data, sent_up_to)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET
           device_id = EXCLUDED.device_id, kind = EXCLUDED.kind, pushkey_ts = EXCLUDED.pushkey_ts,
           app_display_name = EXCLUDED.app_display_name, device_display_name = EXCLUDED.device_display_name,
           profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data, failing_since = NULL
         RETURNING ${COLUMNS}`,
        [userId, deviceId, p.kind, p.app_id, p.pushkey, Date.now(), p.app_display_name, p.device_display_name, p.profile_tag, p.lang, JSON.stringify(p.data), startAt],
      );
      return { row: toRow(r.rows[0]), removed };
    });
  }

  /** Removes the user's pusher (app_id, pushkey); returns the removed ids. */
  async remove(userId: string, appId: string, pushkey: string): Promise<number[]> {
    const r = await this.db.raw('DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ? RETURNING id', [userId, appId, pushkey]);
    return r.rows.map((x: { id: string }) => Number(x.id));
  }

  async removeById(id: number): Promise<boolean> {
    const r = await this.db.raw('DELETE FROM pushers WHERE id = ?', [id]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Removes the pushers set through these devices of the user. */
  async removeForDevices(userId: string, deviceIds: string[]): Promise<number[]> {
    if (!deviceIds.length) return [];
    const r = await this.db.raw('DELETE FROM pushers WHERE user_id = ? AND device_id = ANY(?) RETURNING id', [userId, deviceIds]);
    return r.rows.map((x: { id: string }) => Number(x.id));
  }

  async removeUser(userId: string): Promise<number[]> {
    const r = await this.db.raw('DELETE FROM pushers WHERE user_id = ? RETURNING id', [userId]);
    return r.rows.map((x: { id: string }) => Number(x.id));
  }

  /**
   * Records that everything up to `pos` was sent (never moves back). False when the pusher is gone
   * (removed meanwhile): the sender stops it.
   */
  async advance(id: number, pos: number): Promise<boolean> {
    const r = await this.db.raw('UPDATE pushers SET sent_up_to = GREATEST(sent_up_to, ?), failing_since = NULL WHERE id = ?', [pos, id]);
    return (r.rowCount ?? 0) > 0;
  }

  async setFailingSince(id: number, ts: number | null): Promise<void> {
    await this.db.raw('UPDATE pushers SET failing_since = ? WHERE id = ?', [ts, id]);
  }
}
