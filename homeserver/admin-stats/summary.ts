// The configuration summary the dashboard's Server page shows (issue 12). Built from an allow-list
// of settings: no URL that may hold a password (DATABASE_URL, REDIS_URL), no shared secret, no SMTP
// credentials — only whether they are set.
import type { Config } from '../config.ts';

export function configSummary(c: Config): Record<string, unknown> {
  return {
    server_name: c.serverName,
    public_base_url: c.publicBaseUrl,
    port: c.port,
    workers: c.workers,
    database: c.databaseUrl ? 'external PostgreSQL (DATABASE_URL set)' : 'embedded PostgreSQL',
    redis: c.redisUrl ? 'configured (REDIS_URL set)' : 'not configured (one process)',
    registration: c.registration,
    registration_approval: c.registrationApproval,
    registration_shared_secret: c.registrationSharedSecret ? 'set' : 'not set',
    smtp: c.smtp.host ? 'configured' : 'not configured',
    auto_join_rooms: c.autoJoinRooms,
    default_room_version: c.defaultRoomVersion,
    presence: c.presence,
    rate_limits: c.rateLimits,
    max_request_bytes: c.maxRequestBytes,
    max_upload_bytes: c.maxUploadBytes,
    media_quota_bytes: c.mediaQuotaBytes,
    url_preview: c.urlPreview,
    max_devices_per_user: c.maxDevicesPerUser,
    password_min_length: c.passwordMinLength,
    max_connections: c.maxConnections,
    max_concurrent_requests: c.maxConcurrentRequests,
    admin_allow: c.adminAllow,
    serve_admin_ui: c.serveAdminUi,
    serve_chat_ui: c.serveChatUi,
    log_level: c.logLevel,
  };
}
