/**
 * RFC 5322 §2.3 requires CRLF line endings; devices often send bare LF (field-lessons.md, "device
 * quirks"). Normalising while streaming keeps the spool file canonical so the header rewrite and
 * Graph see one line-ending convention. Bare CR is left alone (Postfix does the same).
 */
export interface LineEndingState {
  /** Whether the previous chunk ended with CR, so a leading LF in the next chunk is not bare. */
  previousWasCr: boolean;
}

const CR = 0x0d;
const LF = 0x0a;

export function normalizeLineEndings(chunk: Buffer, state: LineEndingState): Buffer {
  let bare = 0;
  for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
    const before = i === 0 ? (state.previousWasCr ? CR : -1) : chunk[i - 1];
    if (before !== CR) bare += 1;
  }
  const endsWithCr = chunk.length > 0 && chunk[chunk.length - 1] === CR;
  if (bare === 0) {
    state.previousWasCr = chunk.length > 0 ? endsWithCr : state.previousWasCr;
    return chunk;
  }
  const out = Buffer.allocUnsafe(chunk.length + bare);
  let o = 0;
  for (let i = 0; i < chunk.length; i++) {
    const byte = chunk[i] as number;
    if (byte === LF) {
      const before = i === 0 ? (state.previousWasCr ? CR : -1) : chunk[i - 1];
      if (before !== CR) out[o++] = CR;
    }
    out[o++] = byte;
  }
  state.previousWasCr = endsWithCr;
  return out;
}
