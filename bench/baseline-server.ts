// The baseline server: bare koa + @koa/router, one INSERT per request through a pg pool of 20.
// Run as a child process by baseline.ts (env PORT, DATABASE_URL).
import Koa from 'koa';
import Router from '@koa/router';
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
await pool.query(`CREATE TABLE IF NOT EXISTS baseline_events (
  id BIGSERIAL PRIMARY KEY, txn_id TEXT NOT NULL, body TEXT NOT NULL, created_ts BIGINT NOT NULL)`);

const router = new Router();
router.get('/health', (ctx) => { ctx.body = { ok: true }; });
router.put('/send/:txn', async (ctx) => {
  const chunks: Buffer[] = [];
  for await (const c of ctx.req) chunks.push(c as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
  const r = await pool.query('INSERT INTO baseline_events (txn_id, body, created_ts) VALUES ($1, $2, $3) RETURNING id',
    [ctx.params.txn, JSON.stringify(body), Date.now()]);
  ctx.body = { event_id: `$${r.rows[0].id}` };
});

const app = new Koa();
app.use(router.routes());
const server = app.listen(Number(process.env.PORT), process.env.BIND_ADDRESS ?? '127.0.0.1');
server.keepAliveTimeout = 65_000;
process.on('SIGTERM', () => { server.close(); server.closeAllConnections(); void pool.end().then(() => process.exit(0)); });
