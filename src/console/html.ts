/**
 * HTML escaped by construction: `html` is a tagged template whose every
 * interpolation is escaped unless it is itself `Html` (another `html`
 * result); arrays are joined, `undefined`/`null`/`false` render as nothing.
 * `unsafeRaw` exists only for constant markup written in this room
 * (never call it with data).
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' }

/** Escapes text for an element body or a quoted attribute value. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => ESCAPES[c]!)
}

/** Markup that is safe to emit as is. */
export class Html {
  readonly #text: string
  constructor(text: string) {
    this.#text = text
  }
  toString(): string {
    return this.#text
  }
}

export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[]

function render(v: HtmlValue): string {
  if (v === undefined || v === null || v === false) return ''
  if (v instanceof Html) return v.toString()
  if (Array.isArray(v)) return (v as readonly HtmlValue[]).map(render).join('')
  return escapeHtml(String(v))
}

export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0]!
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!
  return new Html(out)
}

/** Constant markup of this room only. */
export function unsafeRaw(constant: string): Html {
  return new Html(constant)
}
