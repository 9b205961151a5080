/**
 * Graph error bodies: {"error":{"code","message","innerError":{"request-id","date"}}}. The inner key
 * appears as both innerError and innererror in Microsoft's own examples (graph-api-facts §1.9).
 */
export interface GraphErrorInfo {
  code?: string;
  message?: string;
  requestId?: string;
}

export function parseGraphError(body: Buffer, headers: Record<string, string>): GraphErrorInfo {
  const info: GraphErrorInfo = {};
  const headerRequestId = headers['request-id'];
  if (headerRequestId) info.requestId = headerRequestId;
  if (body.length === 0 || body.length > 64 * 1024) return info;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; message?: unknown; innerError?: Record<string, unknown>; innererror?: Record<string, unknown> } };
    const error = parsed.error;
    if (error && typeof error === 'object') {
      if (typeof error.code === 'string') info.code = error.code;
      if (typeof error.message === 'string') info.message = error.message.slice(0, 500);
      const inner = error.innerError ?? error.innererror;
      const innerId = inner?.['request-id'] ?? inner?.['requestId'];
      if (!info.requestId && typeof innerId === 'string') info.requestId = innerId;
    }
  } catch {
    // Not JSON (a proxy's HTML page, say): status alone decides.
  }
  return info;
}
