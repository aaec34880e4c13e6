/**
 * Pictures as inline SVG, generated on the server and escaped like any page
 * (no script, no inline style: presentation attributes and classes of the
 * console's stylesheet only, so the strict CSP holds): the delegation chain
 * as a graph, issuance and refusal rates over time, a risk breakdown.
 */
import { html, type Html } from './html.js'
import type { RateBucket } from './ports.js'

/** The last path segments of a SPIFFE ID, to fit a box (the full ID is in the box's title). */
function shortId(id: string, max = 28): string {
  const rest = id.replace(/^spiffe:\/\//, '')
  return rest.length <= max ? rest : `…${rest.slice(rest.length - max + 1)}`
}

/**
 * A chain of custody as a graph: boxes left to right (outermost first), each
 * arrow "delegated to"; `labels` name what each box is (node, instance, ...).
 */
export function chainGraph(nodes: readonly { id: string; label: string }[], title: string): Html {
  const boxW = 210
  const gap = 46
  const h = 74
  const width = Math.max(1, nodes.length) * (boxW + gap) - gap + 20
  const items = nodes.map((n, i) => {
    const x = 10 + i * (boxW + gap)
    const arrow =
      i < nodes.length - 1
        ? html`<line x1="${x + boxW}" y1="${h / 2 + 6}" x2="${x + boxW + gap - 6}" y2="${h / 2 + 6}" class="edge" marker-end="url(#arrow)" />`
        : undefined
    return html`<g class="node"
        ><title>${n.label}: ${n.id}</title><rect x="${x}" y="12" width="${boxW}" height="${h - 12}" rx="8" /><text x="${x + 10}" y="32" class="node-label"
          >${n.label}</text
        ><text x="${x + 10}" y="54" class="node-id">${shortId(n.id)}</text></g
      >${arrow}`
  })
  return html`<svg class="chain" role="img" aria-label="${title}" viewBox="0 0 ${width} ${h + 12}" width="${width}" height="${h + 12}">
    <title>${title}</title>
    <defs>
      <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead" />
      </marker>
    </defs>
    ${items}
  </svg>`
}

/** Issued and refused token requests per bucket, as two lines with axes and a legend. */
export function rateChart(buckets: readonly RateBucket[], title: string): Html {
  const w = 720
  const h = 240
  const pad = { l: 48, r: 16, t: 20, b: 40 }
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.issued, b.refused)))
  const n = Math.max(1, buckets.length - 1)
  const x = (i: number) => pad.l + ((w - pad.l - pad.r) * i) / n
  const y = (v: number) => h - pad.b - ((h - pad.t - pad.b) * v) / max
  const line = (f: (b: RateBucket) => number) => buckets.map((b, i) => `${i === 0 ? 'M' : 'L'}${x(i).toFixed(1)},${y(f(b)).toFixed(1)}`).join(' ')
  const ticks = [0, Math.round(max / 2), max]
  const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16)
  const labels =
    buckets.length > 0
      ? [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1].map(
          (i) => html`<text x="${x(i)}" y="${h - pad.b + 18}" text-anchor="middle" class="axis-label">${hhmm(buckets[i]!.start)}</text>`,
        )
      : []
  const totals = buckets.reduce((a, b) => ({ issued: a.issued + b.issued, refused: a.refused + b.refused }), { issued: 0, refused: 0 })
  return html`<svg
    class="chart"
    role="img"
    aria-label="${title}: ${totals.issued} issued, ${totals.refused} refused"
    viewBox="0 0 ${w} ${h}"
    width="${w}"
    height="${h}"
  >
    <title>${title}</title>
    ${ticks.map(
      (t) =>
        html`<line x1="${pad.l}" x2="${w - pad.r}" y1="${y(t)}" y2="${y(t)}" class="grid" /><text
            x="${pad.l - 8}"
            y="${y(t) + 4}"
            text-anchor="end"
            class="axis-label"
            >${t}</text
          >`,
    )}
    ${labels} ${buckets.length > 0 ? html`<path d="${line((b) => b.issued)}" class="series-issued" fill="none" />` : undefined}
    ${buckets.length > 0 ? html`<path d="${line((b) => b.refused)}" class="series-refused" fill="none" />` : undefined}
    <g transform="translate(${pad.l + 8},${h - 10})">
      <rect width="14" height="4" y="-6" class="swatch-issued" />
      <text x="20" y="0" class="axis-label">issued (${totals.issued})</text>
      <rect x="150" width="14" height="4" y="-6" class="swatch-refused" />
      <text x="170" y="0" class="axis-label">refused (${totals.refused})</text>
    </g>
  </svg>`
}

/** A risk breakdown: one bar per factor (weights may be negative), and the total. */
export function riskBars(factors: readonly { rule: string; weight: number; detail: string }[], total: number, title: string): Html {
  const w = 420
  const rowH = 22
  const h = (factors.length + 1) * rowH + 8
  const mid = 200
  const scale = 180
  const rows = factors.map((f, i) => {
    const len = Math.min(1, Math.abs(f.weight)) * scale
    const bx = f.weight >= 0 ? mid : mid - len
    return html`<g
      ><title>${f.rule}: ${f.weight.toFixed(2)} (${f.detail})</title
      ><text x="${mid - 6 - (f.weight < 0 ? len : 0)}" y="${i * rowH + 16}" text-anchor="end" class="axis-label">${f.rule}</text
      ><rect x="${bx}" y="${i * rowH + 5}" width="${Math.max(1, len)}" height="14" class="${f.weight >= 0 ? 'bar-up' : 'bar-down'}" /><text
        x="${f.weight >= 0 ? mid + len + 6 : mid + 6}"
        y="${i * rowH + 16}"
        class="axis-label"
        >${f.weight >= 0 ? '+' : ''}${f.weight.toFixed(2)}</text
      ></g
    >`
  })
  const ty = factors.length * rowH
  return html`<svg class="risk" role="img" aria-label="${title}: ${total.toFixed(2)}" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}">
    <title>${title}</title>
    ${rows}
    <line x1="${mid}" x2="${mid}" y1="0" y2="${ty}" class="grid" />
    <text x="${mid - 6}" y="${ty + 16}" text-anchor="end" class="axis-label total">risk</text>
    <rect x="${mid}" y="${ty + 5}" width="${Math.max(1, Math.min(1, total) * scale)}" height="14" class="bar-total" />
    <text x="${mid + Math.min(1, total) * scale + 6}" y="${ty + 16}" class="axis-label total">${total.toFixed(2)}</text>
  </svg>`
}
