// The response-shape checker the integration tests run every response through: it finds the spec operation
// for a request and reports a body that drifts from the operation's schema (missing key, wrong type, bad
// identifier format, undeclared status, error without errcode/error), and skips endpoints the spec lacks.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { specChecker } from '../helpers/openapi.ts';

const checker = specChecker();
const json = (method: string, path: string, status: number, body: unknown) =>
  checker.check({ method, path, status, contentType: 'application/json', body, isJson: true });

const event = {
  type: 'm.room.message', event_id: '$abc', sender: '@alice:localhost', origin_server_ts: 1_700_000_000_000,
  content: { msgtype: 'm.text', body: 'hi' },
};

describe('finding the operation', () => {
  test('templates match by method and path; literal segments beat parameters; the query is ignored', () => {
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/sync?since=s1&timeout=0')?.operationId, 'sync');
    assert.equal(checker.findOperation('PUT', '/_matrix/client/v3/rooms/!r%3Ahs/send/m.room.message/t1')?.operationId, 'sendMessage');
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/rooms/!r%3Ahs/state')?.operationId, 'getRoomState');
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/pushrules/')?.operationId, 'getPushRules');
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/pushrules/global/')?.operationId, 'getPushRulesGlobal');
  });

  test('r0 is v3; a path one segment short has an empty last parameter; another version still matches', () => {
    assert.equal(checker.findOperation('GET', '/_matrix/client/r0/account/whoami')?.operationId, 'getTokenOwner');
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/rooms/!r%3Ahs/state/m.room.name')?.operationId, 'getRoomStateWithKey');
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/rooms/!r%3Ahs/relations/%24e')?.operationId, 'getRelatingEvents');
  });

  test('a method and path the spec describes twice is one operation accepting either shape', () => {
    // inviting.yaml's "/rooms/{roomId}/invite " (trailing space) and third_party_membership.yaml's invite.
    const invite = json('POST', '/_matrix/client/v3/rooms/!r%3Ahs/invite', 200, {});
    assert.equal(invite.operation?.operationId, 'inviteBy3PID|inviteUser');
    assert.equal(invite.problem, undefined);
    assert.match(json('POST', '/_matrix/client/v3/rooms/!r%3Ahs/invite', 200, []).problem ?? '', /at \/: must be object/);
  });

  test('endpoints the spec does not describe are skipped', () => {
    assert.equal(checker.findOperation('GET', '/_synapse/admin/v1/users'), undefined);
    // Only a state key may be an empty segment: this is Synapse's unspecced list of one kind, not getPushRule.
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/pushrules/global/underride/'), undefined);
    assert.equal(checker.findOperation('GET', '/_matrix/client/v3/rooms/!r%3Ahs/state/m.room.name/')?.operationId, 'getRoomStateWithKey');
    assert.deepEqual(json('GET', '/_synapse/admin/v1/users', 200, { anything: 1 }), {});
    assert.equal(json('OPTIONS', '/_matrix/client/v3/sync', 204, undefined).problem, undefined);
  });
});

describe('reporting drift', () => {
  test('a response matching the spec passes', () => {
    const ok = json('GET', '/_matrix/client/v3/sync', 200, { next_batch: 's1', rooms: { join: { '!r:hs': { timeline: { events: [event], limited: false } } } } });
    assert.equal(ok.operation?.operationId, 'sync');
    assert.equal(ok.problem, undefined);
    assert.equal(json('GET', '/_matrix/client/v3/account/whoami', 200, { user_id: '@alice:localhost', device_id: 'D' }).problem, undefined);
  });

  test('a missing required key is reported with the operation and a JSON pointer', () => {
    const { problem } = json('GET', '/_matrix/client/v3/sync', 200, { rooms: {} });
    assert.match(problem ?? '', /GET \/_matrix\/client\/v3\/sync .*sync\) → 200/);
    assert.match(problem ?? '', /at \/: must have required property 'next_batch'/);
  });

  test('a wrong type deep inside a referenced event schema is reported where it is', () => {
    const bad = { ...event, origin_server_ts: '1700000000000' };
    const { problem } = json('GET', '/_matrix/client/v3/sync', 200, { next_batch: 's1', rooms: { join: { '!r:hs': { timeline: { events: [bad] } } } } });
    assert.match(problem ?? '', /at \/rooms\/join\/!r:hs\/timeline\/events\/0\/origin_server_ts: must be integer \(found "1700000000000"\)/);
  });

  test('spec formats are checked: identifiers, int64', () => {
    assert.match(json('GET', '/_matrix/client/v3/account/whoami', 200, { user_id: 'alice' }).problem ?? '', /user_id: must match format "mx-user-id"/);
    const float = { ...event, origin_server_ts: 1.5 };
    assert.match(json('GET', '/_matrix/client/v3/rooms/!r%3Ahs/event/%24abc', 200, { ...float, room_id: '!r:hs' }).problem ?? '', /origin_server_ts: must be integer/);
    assert.match(json('POST', '/_matrix/client/v3/createRoom', 200, { room_id: 'r:hs' }).problem ?? '', /room_id: must match format "mx-room-id"/);
  });

  test('a status the operation does not declare is reported; a body that is not JSON, or not labelled JSON, is reported', () => {
    assert.match(json('GET', '/_matrix/client/v3/account/whoami', 201, { user_id: '@a:hs' }).problem ?? '', /declares no 201 response \(declared: 200/);
    const text = checker.check({ method: 'GET', path: '/_matrix/client/v3/account/whoami', status: 200, contentType: 'text/plain', body: 'ok', isJson: false });
    assert.match(text.problem ?? '', /body is not JSON \(content-type text\/plain\)/);
    const mislabelled = checker.check({ method: 'GET', path: '/_matrix/client/v3/account/whoami', status: 200, contentType: 'text/html', body: { user_id: '@a:hs' }, isJson: true });
    assert.match(mislabelled.problem ?? '', /JSON body served as content-type text\/html/);
  });

  test('errors must be {errcode, error}, whether or not the operation declares that status', () => {
    assert.equal(json('GET', '/_matrix/client/v3/account/whoami', 401, { errcode: 'M_MISSING_TOKEN', error: 'Missing access token' }).problem, undefined);
    assert.equal(json('POST', '/_matrix/client/v3/createRoom', 400, { errcode: 'M_BAD_JSON', error: 'bad' }).problem, undefined);
    assert.match(json('POST', '/_matrix/client/v3/createRoom', 400, { errcode: 'M_BAD_JSON' }).problem ?? '', /must have required property 'error'/);
    assert.match(json('GET', '/_matrix/client/v3/sync', 500, { error: 'boom' }).problem ?? '', /must have required property 'errcode'/);
    assert.match(json('GET', '/_matrix/client/v3/sync', 400, { errcode: 400, error: 'x' }).problem ?? '', /errcode: must be string/);
  });

  test('a declared error schema applies (UIA 401 carries flows), but a token error on it is a plain error', () => {
    const uia = { flows: [{ stages: ['m.login.dummy'] }], params: {}, session: 's' };
    assert.equal(json('POST', '/_matrix/client/v3/register', 401, uia).problem, undefined);
    assert.match(json('POST', '/_matrix/client/v3/register', 401, { session: 's' }).problem ?? '', /required property 'flows'/);
    assert.equal(json('POST', '/_matrix/client/v3/account/password', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Unknown token' }).problem, undefined);
  });

  test('a known deviation is accepted for its exact body only', () => {
    assert.equal(json('GET', '/_matrix/client/v3/voip/turnServer', 200, {}).problem, undefined);
    assert.match(json('GET', '/_matrix/client/v3/voip/turnServer', 200, { uris: [] }).problem ?? '', /required property 'username'/);
  });

  test('responses are counted per operation for coverage figures', () => {
    const before = checker.validated.get('getTokenOwner') ?? 0;
    json('GET', '/_matrix/client/v3/account/whoami', 200, { user_id: '@alice:localhost' });
    assert.equal(checker.validated.get('getTokenOwner'), before + 1);
  });
});
