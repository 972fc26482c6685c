/** This server's version, as federation's /version, the admin API's server_version and the dashboard report it (package.json's). */
export const SERVER_VERSION = '0.1.0';
