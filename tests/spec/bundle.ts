// Reads the Matrix spec's client-server OpenAPI files once and writes tests/spec/client-server.json: every
// operation (method, full path template, a JSON-Schema $ref per response status) and every YAML document its
// response schemas reach through $ref (event schemas, definitions), so tests never depend on ../shared.
//
//   node --import tsx tests/spec/bundle.ts [path/to/matrix-spec]     (default: ../shared/matrix-spec)
//
// Descriptions, examples and x- keys are dropped (validation does not read them); everything else is kept as
// written, including relative $refs, which the checker resolves through each document's $id, except one
// OpenAPI habit: `oneOf` is written to mean "one of these shapes" although the shapes overlap (getRoomStateWithKey:
// `type: object` or a state event, which is an object too), so it is bundled as `anyOf`.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const SPEC_BASE_URI = 'https://spec.matrix.org/data/';
const API_DIR = 'api/client-server';
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];
// Keys under these are names (of properties, statuses, media types, …), never schema keywords.
const NAME_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'paths', 'responses', 'content', 'schemas', 'components']);
const DOC_ONLY_KEYS = new Set(['description', 'summary', 'example', 'examples', 'title']);

export interface BundledOperation {
  operationId: string;
  method: string;
  /** The full path template, e.g. /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}. */
  path: string;
  /** Response status → absolute $refs of its application/json schema (several where the spec describes one
   * method and path twice, e.g. POST /rooms/{roomId}/invite as inviteUser and inviteBy3PID: either shape is right). */
  responses: Record<string, string[]>;
}

export interface SpecBundle {
  source: string;
  operations: BundledOperation[];
  /** Document URI → the document (JSON Schema; API documents keep only paths' response schemas and components). */
  documents: Record<string, unknown>;
}

const pointerEscape = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** A copy without descriptions, examples and x- keys, with oneOf as anyOf. */
function stripDocs(value: unknown, parentKey = ''): unknown {
  if (Array.isArray(value)) return value.map((v) => stripDocs(v));
  if (value === null || typeof value !== 'object') return value;
  const names = NAME_MAPS.has(parentKey);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!names && (DOC_ONLY_KEYS.has(key) || key.startsWith('x-'))) continue;
    out[!names && key === 'oneOf' ? 'anyOf' : key] = stripDocs(v, names ? '' : key);
  }
  return out;
}

/** Every $ref string inside a value. */
function refsIn(value: unknown, found: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) refsIn(v, found);
  else if (value !== null && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      if (key === '$ref' && typeof v === 'string') found.push(v);
      else refsIn(v, found);
    }
  }
  return found;
}

function basePathOf(doc: any): string {
  const basePath = doc.servers?.[0]?.variables?.basePath?.default;
  if (typeof basePath !== 'string') throw new Error(`no servers[0].variables.basePath.default`);
  return basePath;
}

export function bundle(specRoot: string): SpecBundle {
  const dataDir = path.join(specRoot, 'data');
  const hash = createHash('sha256');
  const read = (rel: string): any => {
    const text = fs.readFileSync(path.join(dataDir, rel), 'utf8');
    hash.update(rel).update(text);
    return YAML.parse(text);
  };
  const operations: BundledOperation[] = [];
  const documents: Record<string, unknown> = {};
  const pending: string[] = [];

  const apiFiles = fs.readdirSync(path.join(dataDir, API_DIR)).filter((f) => f.endsWith('.yaml')).sort();
  for (const file of apiFiles) {
    const rel = `${API_DIR}/${file}`;
    const uri = SPEC_BASE_URI + rel;
    const doc = read(rel);
    const basePath = basePathOf(doc);
    const keptPaths: Record<string, any> = {};
    for (const [key, item] of Object.entries<any>(doc.paths ?? {})) {
      // inviting.yaml spells its path "/rooms/{roomId}/invite " (trailing space) to describe that path a second time.
      const template = key.trim();
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const responses: Record<string, string[]> = {};
        for (const [status, declared] of Object.entries<any>(op.responses ?? {})) {
          // A response may itself be a $ref to #/components/responses/…
          let response = declared;
          if (typeof response.$ref === 'string' && response.$ref.startsWith('#/components/responses/')) {
            response = doc.components.responses[response.$ref.slice('#/components/responses/'.length)];
          }
          const schema = response?.content?.['application/json']?.schema;
          if (!schema) continue;
          const keptResponses = ((keptPaths[key] ??= {})[method] ??= { responses: {} }).responses;
          keptResponses[status] = { content: { 'application/json': { schema: stripDocs(schema) } } };
          responses[status] = [`${uri}#/paths/${pointerEscape(key)}/${method}/responses/${status}/content/application~1json/schema`];
        }
        const full = { operationId: op.operationId, method: method.toUpperCase(), path: basePath + template, responses };
        const twin = operations.find((o) => o.method === full.method && o.path === full.path);
        if (!twin) {
          operations.push(full);
          continue;
        }
        twin.operationId = [twin.operationId, full.operationId].sort().join('|');
        for (const [status, refs] of Object.entries(responses)) twin.responses[status] = [...(twin.responses[status] ?? []), ...refs];
      }
    }
    const components = doc.components?.schemas ? { schemas: stripDocs(doc.components.schemas, 'schemas') } : undefined;
    const kept = { $id: uri, paths: keptPaths, ...(components ? { components } : {}) };
    documents[uri] = kept;
    pending.push(...refsIn(kept).map((ref) => new URL(ref, uri).href));
  }

  // Every other document a kept schema reaches, transitively.
  while (pending.length > 0) {
    const target = pending.pop()!.split('#')[0];
    if (documents[target]) continue;
    if (!target.startsWith(SPEC_BASE_URI)) throw new Error(`$ref outside the spec data: ${target}`);
    const doc = stripDocs(read(target.slice(SPEC_BASE_URI.length))) as Record<string, unknown>;
    documents[target] = { ...doc, $id: target };
    pending.push(...refsIn(doc).map((ref) => new URL(ref, target).href));
  }

  operations.sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  const sorted = Object.fromEntries(Object.entries(documents).sort(([a], [b]) => a.localeCompare(b)));
  return { source: `matrix-spec data/${API_DIR} (sha256 of inputs ${hash.digest('hex').slice(0, 16)})`, operations, documents: sorted };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
  const specRoot = path.resolve(process.argv[2] ?? path.join(repoRoot, '../shared/matrix-spec'));
  const result = bundle(specRoot);
  const out = path.join(repoRoot, 'tests/spec/client-server.json');
  fs.writeFileSync(out, `${JSON.stringify(result, null, 1)}\n`);
  console.log(`${out}: ${result.operations.length} operations, ${Object.keys(result.documents).length} documents`);
}
