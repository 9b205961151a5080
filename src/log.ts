/**
 * Structured JSON logs (pino) to stdout: one event per lifecycle step, keyed by queue id.
 * Anything that could carry a secret is redacted by path as a second line of defence;
 * the first is never passing secrets to the logger at all.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export const REDACTED_PATHS = [
  'clientSecret',
  'password',
  'accessToken',
  'access_token',
  'refresh_token',
  'token',
  'authorization',
  'headers.authorization',
  '*.clientSecret',
  '*.password',
  '*.accessToken',
  '*.authorization',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'smtp-graph-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that drops everything, for unit tests that do not inspect logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
