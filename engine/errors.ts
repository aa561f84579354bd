/** Every error the engine raises names the op (or kernel) and the shapes involved. */
export class EngineError extends Error {
  constructor(public op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "EngineError";
  }
}

export const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;
