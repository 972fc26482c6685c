import type { Middleware } from 'koa';

/** CORS as the client-server spec asks: any origin, and OPTIONS answered on every path. */
export const cors: Middleware = async (ctx, next) => {
  ctx.set('Access-Control-Allow-Origin', '*');
  ctx.set('Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, DELETE, OPTIONS');
  ctx.set('Access-Control-Allow-Headers', 'X-Requested-With, Content-Type, Authorization, Date');
  ctx.set('Access-Control-Expose-Headers', 'Synapse-Trace-Id, Server, ETag');
  if (ctx.method === 'OPTIONS') {
    ctx.status = 204;
    return;
  }
  await next();
};
