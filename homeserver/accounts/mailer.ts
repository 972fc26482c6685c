import nodemailer from 'nodemailer';
import type { Config } from '../config.ts';

/** Outgoing mail: the validation links of e-mail registration, address binding and password reset. */
export interface Mailer {
  send(mail: { to: string; subject: string; text: string; html: string }): Promise<void>;
}

/** A mailer over SMTP (SMTP_* settings); undefined when SMTP_HOST is unset (no mail can be sent). */
export function smtpMailer(smtp: Config['smtp']): Mailer | undefined {
  if (!smtp.host) return undefined;
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.tls === 'implicit',
    requireTLS: smtp.tls === 'starttls',
    ignoreTLS: smtp.tls === 'off',
    auth: smtp.user ? { user: smtp.user, pass: smtp.password ?? '' } : undefined,
    // A mail server that stalls must not hold the request that asked for the mail for minutes.
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 20_000,
  });
  return {
    async send(mail) {
      await transport.sendMail({ from: smtp.from, ...mail });
    },
  };
}
