// Which addresses the URL previewer may connect to: Synapse's url_preview_ip_range_blacklist and
// _whitelist, as CIDR ranges in a node:net BlockList.
import net from 'node:net';

/** Synapse's DEFAULT_IP_RANGE_BLACKLIST: loopback, private, link-local, CGNAT, documentation, multicast. */
export const DEFAULT_PREVIEW_DENYLIST = [
  '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '192.0.0.0/24',
  '169.254.0.0/16', '192.88.99.0/24', '198.18.0.0/15', '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24',
  '224.0.0.0/4', '::1/128', 'fe80::/10', 'fc00::/7', '2001:db8::/32', 'ff00::/8', 'fec0::/10',
];
/** Always denied, whatever is configured (Synapse adds them too): "this host" and the unspecified address. */
const ALWAYS_DENIED = ['0.0.0.0/8', '::/128'];

/** A CIDR range "addr/prefix" (a bare address is one host), or undefined when it is not one. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address, prefixText, ...rest] = text.trim().split('/');
  if (rest.length || !address) return undefined;
  const version = net.isIP(address);
  if (!version) return undefined;
  const max = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

function blockList(ranges: string[]): net.BlockList {
  const list = new net.BlockList();
  for (const r of ranges) {
    const c = parseCidr(r);
    if (!c) throw new Error(`not a CIDR range: ${r}`);
    list.addSubnet(c.address, c.prefix, c.family);
  }
  return list;
}

export class IpRangePolicy {
  private readonly deny: net.BlockList;
  private readonly allow: net.BlockList;
  private readonly always = blockList(ALWAYS_DENIED);

  constructor(deny: string[], allow: string[]) {
    this.deny = blockList(deny);
    this.allow = blockList(allow);
  }

  /** True when the previewer may connect to `address` (an allow entry overrides a deny entry). */
  permits(address: string): boolean {
    let ip = address;
    let family: 'ipv4' | 'ipv6' = net.isIP(ip) === 4 ? 'ipv4' : 'ipv6';
    // ::ffff:127.0.0.1 is 127.0.0.1.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (mapped) { ip = mapped[1]!; family = 'ipv4'; }
    // …and so is ::ffff:7f00:1, the form the URL parser normalises it to.
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
    if (hex) {
      const hi = Number.parseInt(hex[1]!, 16);
      const lo = Number.parseInt(hex[2]!, 16);
      ip = `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
      family = 'ipv4';
    }
    if (!net.isIP(ip)) return false;
    if (this.always.check(ip, family)) return false;
    if (this.allow.check(ip, family)) return true;
    return !this.deny.check(ip, family);
  }
}
