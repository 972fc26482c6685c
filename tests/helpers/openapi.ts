// Checks HTTP responses against the Matrix spec's client-server OpenAPI schemas (bundled into
// tests/spec/client-server.json by tests/spec/bundle.ts), so a response shape that drifts from the spec fails
// the test that received it. Endpoints the spec does not describe are skipped.
import fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import type { BundledOperation, SpecBundle } from '../spec/bundle.ts';

export interface CheckedResponse {
  method: string;
  /** The request path, optionally with a query string. */
  path: string;
  status: number;
  contentType: string | null;
  /** The parsed JSON body, or the raw text when it was not JSON. */
  body: unknown;
  /** Whether body came from parsing JSON. */
  isJson: boolean;
}

export interface CheckResult {
  /** The spec operation the request matched, or undefined when the spec has none (not checked). */
  operation?: BundledOperation;
  /** What is wrong with the response, or undefined when it matches (or was not checked). */
  problem?: string;
}

// The spec only names these formats (data/string-formats.yaml); ajv knows none of them. Each check is the
// grammar's outline, enough to catch a wrong kind of identifier or a non-integer int64.
const STRING_FORMATS: Record<string, RegExp> = {
  'mx-user-id': /^@[^:]*:.+$/s,
  'mx-room-id': /^!.+$/s,
  'mx-event-id': /^\$.+$/s,
  'mx-room-alias': /^#[^:]*:.+$/s,
  'mx-server-name': /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/,
  'mx-mxc-uri': /^mxc:\/\/[^/]+\/.+$/,
  'mx-unpadded-base64': /^[A-Za-z0-9+/]*$/,
  'mx-urlsafe-unpadded-base64': /^[A-Za-z0-9_-]*$/,
  uri: /^[A-Za-z][A-Za-z0-9+.-]*:\S*$/,
  email: /^[^@\s]+@[^@\s]+$/,
};

/** The standard error body, with `error` required too: every error this server sends says what went wrong. */
const ERROR_SCHEMA_REF = 'https://spec.matrix.org/data/api/client-server/definitions/errors/error.yaml';
const STANDARD_ERROR = { allOf: [{ $ref: ERROR_SCHEMA_REF }], required: ['errcode', 'error'] };
/** An error a declared schema describes (e.g. 429, UIA's 401) must still say what went wrong if it has an errcode. */
// (anyOf, not if/then: an object with a `then` key looks like a promise.)
const ERROR_TEXT_IF_ERRCODE = { anyOf: [{ not: { required: ['errcode'] } }, { required: ['error'], properties: { error: { type: 'string' } } }] };
const TOKEN_ERRCODES = new Set(['M_MISSING_TOKEN', 'M_UNKNOWN_TOKEN']);

/**
 * Answers that knowingly differ from the spec, as Synapse's do. Each matches one operation, status and exact
 * body, so any other drift on the operation is still reported.
 */
const KNOWN_DEVIATIONS: { operationId: string; status: number; body: unknown; why: string }[] = [
  {
    operationId: 'getTurnServer', status: 200, body: {},
    why: 'no TURN server configured: Synapse answers {}; the spec wants credentials, and an empty `uris` would '
      + 'make matrix-js-sdk hand RTCPeerConnection an empty urls list',
  },
];

interface Route { operation: BundledOperation; segments: string[] }

export class OpenApiChecker {
  private readonly ajv: Ajv2020;
  private readonly routes: Route[];
  private readonly validators = new Map<string, ValidateFunction>();
  /** operationId → number of responses validated, for coverage figures. */
  readonly validated = new Map<string, number>();
  /** `METHOD /path` (identifiers masked) → number of responses not checked because the spec has no such endpoint. */
  readonly unknown = new Map<string, number>();

  constructor(bundle: SpecBundle) {
    // strict: false and no meta-schema check: API documents keep their OpenAPI `paths` around the schemas, and
    // schemas mix in OpenAPI-only keys, which strict mode refuses as unknown keywords.
    this.ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
    for (const [name, pattern] of Object.entries(STRING_FORMATS)) this.ajv.addFormat(name, { type: 'string', validate: pattern });
    this.ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
    this.ajv.addFormat('float', { type: 'number', validate: (n: number) => Number.isFinite(n) });
    for (const doc of Object.values(bundle.documents)) this.ajv.addSchema(doc as object);
    this.routes = bundle.operations.map((operation) => ({ operation, segments: operation.path.split('/') }));
  }

  /** The spec operation for a request, preferring literal segments over parameters; r0 is served as v3. */
  findOperation(method: string, rawPath: string): BundledOperation | undefined {
    const pathOnly = rawPath.split('?')[0].replace(/^\/_matrix\/client\/r0\//, '/_matrix/client/v3/');
    const segments = pathOnly.split('/');
    const m = method.toUpperCase();
    // An endpoint the spec lists under another version (e.g. /v3/ for a /v1/ one) is still the same shape; a
    // path one segment short of a {stateKey} template has the empty state key (/state/{eventType}).
    return this.bestRoute(m, segments, false) ?? this.bestRoute(m, segments, true)
      ?? this.bestRoute(m, [...segments, ''], false) ?? this.bestRoute(m, [...segments, ''], true);
  }

  private bestRoute(method: string, segments: string[], anyVersion: boolean): BundledOperation | undefined {
    let best: { route: Route; literals: number } | undefined;
    for (const route of this.routes) {
      if (route.operation.method !== method || route.segments.length !== segments.length) continue;
      let literals = 0;
      let ok = true;
      for (let i = 0; i < segments.length && ok; i++) {
        const want = route.segments[i];
        if (want.startsWith('{') && want.endsWith('}')) {
          // Only a state key may be empty: /pushrules/global/{kind}/ is not getPushRule with rule id "".
          ok = segments[i] !== '' || want === '{stateKey}';
          continue;
        }
        if (anyVersion && i === 3 && segments[1] === '_matrix' && /^(v\d+|r0)$/.test(segments[i])) continue;
        if (safeDecode(segments[i]) === want) literals++;
        else ok = false;
      }
      if (ok && (!best || literals > best.literals)) best = { route, literals };
    }
    return best?.route.operation;
  }

  /** Checks one response; the result names the operation and, if the body drifts from the spec, how. */
  check(res: CheckedResponse): CheckResult {
    const method = res.method.toUpperCase();
    if (method === 'OPTIONS' || method === 'HEAD') return {};
    const operation = this.findOperation(method, res.path);
    if (!operation) {
      const key = `${method} ${res.path.split('?')[0].replace(/\/(%21|!|%24|\$|%40|@|%23|#)[^/]*/g, '/{id}')}`;
      this.unknown.set(key, (this.unknown.get(key) ?? 0) + 1);
      return {};
    }
    if (KNOWN_DEVIATIONS.some((d) => d.operationId === operation.operationId && d.status === res.status && isDeepStrictEqual(d.body, res.body))) {
      return { operation };
    }
    const declared = Object.keys(operation.responses);
    if (declared.length === 0) return { operation }; // no JSON response in the spec (media, redirects)
    const where = `${method} ${res.path.split('?')[0]} (spec ${operation.method} ${operation.path}, ${operation.operationId}) → ${res.status}`;
    const schemaRefs = operation.responses[String(res.status)];
    let target: { ref: string; schema: object } | undefined;
    if (schemaRefs && !(res.status === 401 && TOKEN_ERRCODES.has((res.body as any)?.errcode))) {
      const declaredSchema = schemaRefs.length === 1 ? { $ref: schemaRefs[0] } : { anyOf: schemaRefs.map(($ref) => ({ $ref })) };
      const schema = res.status >= 400 ? { allOf: [declaredSchema, ERROR_TEXT_IF_ERRCODE] } : declaredSchema;
      target = { ref: schemaRefs.join(' or '), schema };
    } else if (res.status >= 400) {
      target = { ref: 'standard error', schema: STANDARD_ERROR };
    } else if (res.status === 204 || (res.status >= 300 && res.status < 400)) {
      return { operation };
    } else {
      return { operation, problem: `${where}: the spec declares no ${res.status} response (declared: ${declared.join(', ')})` };
    }
    if (!res.isJson) {
      return { operation, problem: `${where}: body is not JSON (content-type ${res.contentType ?? 'none'}): ${String(res.body).slice(0, 200)}` };
    }
    if (!/^application\/json\b/i.test(res.contentType ?? '')) {
      return { operation, problem: `${where}: JSON body served as content-type ${res.contentType ?? 'none'}, not application/json` };
    }
    const validate = this.validator(target.ref, target.schema);
    this.validated.set(operation.operationId, (this.validated.get(operation.operationId) ?? 0) + 1);
    if (validate(res.body)) return { operation };
    return { operation, problem: `${where}: response does not match ${target.ref}\n${describeErrors(validate.errors ?? [], res.body)}` };
  }

  private validator(key: string, schema: object): ValidateFunction {
    let validate = this.validators.get(key);
    if (!validate) this.validators.set(key, (validate = this.ajv.compile(schema)));
    return validate;
  }
}

function safeDecode(segment: string): string {
  try { return decodeURIComponent(segment); } catch { return segment; }
}

/** One line per error: JSON pointer into the body, what was wrong, and the value found there. */
function describeErrors(errors: ErrorObject[], body: unknown, max = 8): string {
  // With allErrors, a failed anyOf/oneOf reports every branch; keep the most specific (deepest) ones first.
  const sorted = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length);
  const lines = sorted.slice(0, max).map((e) => {
    const found = valueAt(body, e.instancePath);
    const shown = found === undefined ? '' : ` (found ${JSON.stringify(found)?.slice(0, 80)})`;
    return `  at ${e.instancePath || '/'}: ${e.message}${formatParams(e)}${shown} [schema ${e.schemaPath}]`;
  });
  if (errors.length > max) lines.push(`  … and ${errors.length - max} more`);
  return lines.join('\n');
}

function formatParams(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'required' || e.keyword === 'additionalProperties') return '';
  if (e.keyword === 'enum') return ` ${JSON.stringify(p.allowedValues)}`;
  return '';
}

function valueAt(body: unknown, pointer: string): unknown {
  let value: any = body;
  for (const part of pointer.split('/').slice(1)) {
    if (value === null || typeof value !== 'object') return undefined;
    value = value[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return value;
}

let shared: OpenApiChecker | undefined;

/** The checker over the committed bundle, built once per process. */
export function specChecker(): OpenApiChecker {
  if (!shared) {
    const bundle = JSON.parse(fs.readFileSync(new URL('../spec/client-server.json', import.meta.url), 'utf8')) as SpecBundle;
    shared = new OpenApiChecker(bundle);
    const coverageFile = process.env.OPENAPI_COVERAGE_FILE;
    if (coverageFile) {
      // For coverage figures: one line per operation and count, appended by every test process.
      const checker = shared;
      process.on('exit', () => {
        const lines = [...checker.validated].map(([id, n]) => `checked\t${id}\t${n}\n`)
          .concat([...checker.unknown].map(([route, n]) => `not in spec\t${route}\t${n}\n`)).join('');
        if (lines) fs.appendFileSync(coverageFile, lines);
      });
    }
  }
  return shared;
}
