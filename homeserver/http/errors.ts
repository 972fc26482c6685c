/** The one error type of the server; the error middleware turns it into `{errcode, error, ...extra}`. */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badJson = (msg: string) => new MatrixError(400, 'M_BAD_JSON', msg);
export const invalidParam = (msg: string) => new MatrixError(400, 'M_INVALID_PARAM', msg);
export const missingParam = (msg: string) => new MatrixError(400, 'M_MISSING_PARAM', msg);
export const forbidden = (msg: string) => new MatrixError(403, 'M_FORBIDDEN', msg);
export const notFound = (msg: string) => new MatrixError(404, 'M_NOT_FOUND', msg);
export const unrecognized = (msg = 'Unrecognized request') => new MatrixError(404, 'M_UNRECOGNIZED', msg);
export const tooLarge = (msg: string) => new MatrixError(413, 'M_TOO_LARGE', msg);
