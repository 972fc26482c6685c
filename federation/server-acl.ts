// m.room.server_acl (spec: "Server Access Control Lists"): whether a server may take part in a
// room. Globs with * and ?, matched against the server name without its port; IP literals are
// denied unless allow_ip_literals; deny wins over allow; no allow entry matching is a denial.
const globCache = new Map<string, RegExp>();

function glob(pattern: string): RegExp {
  let re = globCache.get(pattern);
  if (!re) {
    re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
    if (globCache.size > 1000) globCache.clear();
    globCache.set(pattern, re);
  }
  return re;
}

function hostOf(server: string): string {
  if (server.startsWith('[')) return server.slice(0, server.indexOf(']') + 1);
  const i = server.lastIndexOf(':');
  return i >= 0 ? server.slice(0, i) : server;
}

export function serverAllowedByAcl(content: unknown, server: string): boolean {
  if (typeof content !== 'object' || content === null) return true;
  const c = content as { allow?: unknown; deny?: unknown; allow_ip_literals?: unknown };
  const host = hostOf(server);
  const isIp = /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('[');
  if (isIp && c.allow_ip_literals === false) return false;
  const list = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  if (list(c.deny).some((p) => glob(p).test(host))) return false;
  return list(c.allow).some((p) => glob(p).test(host));
}
