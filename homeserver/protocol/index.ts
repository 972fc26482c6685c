// Pure Matrix protocol core: no I/O, node built-ins only.
export * from './canonical-json.ts';
export * from './base64.ts';
export * from './room-versions.ts';
export * from './hashes.ts';
export * from './redaction.ts';
export * from './signing.ts';
export * from './power-levels.ts';
export * from './auth.ts';
export * from './identifiers.ts';
export * from './state-res-v2.ts';
export * from './state-res-v1.ts';
