/**
 * The console's only script, served as /static/console.js (CSP `script-src
 * 'self'`, nothing inline): the WebAuthn ceremonies. It reads the CSRF token
 * from `<meta name="csrf-token">`, asks the server for options, calls
 * `navigator.credentials`, and posts the result back as JSON (the shapes
 * @simplewebauthn/server verifies). Everything else in the console is plain
 * forms.
 */
export const CONSOLE_JS = `'use strict'
;(function () {
  var b64u = {
    toBuf: function (s) {
      var b = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4))
      var a = new Uint8Array(b.length)
      for (var i = 0; i < b.length; i++) a[i] = b.charCodeAt(i)
      return a.buffer
    },
    fromBuf: function (buf) {
      var a = new Uint8Array(buf), s = ''
      for (var i = 0; i < a.length; i++) s += String.fromCharCode(a[i])
      return btoa(s).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '')
    },
  }
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]')
    return m ? m.getAttribute('content') : ''
  }
  function status(text) {
    var el = document.getElementById('status')
    if (el) el.textContent = text
  }
  function post(url, body) {
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(body || {}),
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j && j.error ? j.error : 'request failed')
        return j
      })
    })
  }
  function register(btn) {
    btn.disabled = true
    status('Waiting for your authenticator…')
    post('/setup/webauthn/options')
      .then(function (o) {
        o.challenge = b64u.toBuf(o.challenge)
        o.user.id = b64u.toBuf(o.user.id)
        o.excludeCredentials = (o.excludeCredentials || []).map(function (c) {
          return { type: c.type, id: b64u.toBuf(c.id), transports: c.transports }
        })
        return navigator.credentials.create({ publicKey: o })
      })
      .then(function (cred) {
        var r = cred.response
        return post('/setup/webauthn', {
          id: cred.id,
          rawId: b64u.fromBuf(cred.rawId),
          type: cred.type,
          clientExtensionResults: cred.getClientExtensionResults(),
          authenticatorAttachment: cred.authenticatorAttachment || undefined,
          response: {
            clientDataJSON: b64u.fromBuf(r.clientDataJSON),
            attestationObject: b64u.fromBuf(r.attestationObject),
            transports: r.getTransports ? r.getTransports() : [],
          },
        })
      })
      .then(function (j) {
        status('Passkey registered.')
        window.location.assign(j.redirect)
      })
      .catch(function (e) {
        btn.disabled = false
        status('Registration failed: ' + e.message)
      })
  }
  function login(btn) {
    btn.disabled = true
    status('Waiting for your authenticator…')
    post('/login/webauthn/options')
      .then(function (o) {
        o.challenge = b64u.toBuf(o.challenge)
        o.allowCredentials = (o.allowCredentials || []).map(function (c) {
          return { type: c.type, id: b64u.toBuf(c.id), transports: c.transports }
        })
        return navigator.credentials.get({ publicKey: o })
      })
      .then(function (cred) {
        var r = cred.response
        return post('/login/webauthn', {
          id: cred.id,
          rawId: b64u.fromBuf(cred.rawId),
          type: cred.type,
          clientExtensionResults: cred.getClientExtensionResults(),
          authenticatorAttachment: cred.authenticatorAttachment || undefined,
          response: {
            clientDataJSON: b64u.fromBuf(r.clientDataJSON),
            authenticatorData: b64u.fromBuf(r.authenticatorData),
            signature: b64u.fromBuf(r.signature),
            userHandle: r.userHandle ? b64u.fromBuf(r.userHandle) : undefined,
          },
        })
      })
      .then(function (j) {
        window.location.assign(j.redirect)
      })
      .catch(function () {
        btn.disabled = false
        status('Login failed.')
      })
  }
  document.addEventListener('DOMContentLoaded', function () {
    var reg = document.getElementById('passkey-register')
    if (reg) reg.addEventListener('click', function () { register(reg) })
    var lg = document.getElementById('passkey-login')
    if (lg) lg.addEventListener('click', function () { login(lg) })
    if ((reg || lg) && !window.PublicKeyCredential) status('This browser has no WebAuthn support: use a TOTP code.')
  })
})()
`

export const CONSOLE_CSS = `:root { color-scheme: light; --fg: #1b1f24; --muted: #4a5562; --bg: #ffffff; --panel: #f4f6f8; --line: #c9d1d9;
  --accent: #0b5cad; --danger: #a4161a; --ok: #196c2e; --warn: #8a5300; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, textarea:focus-visible, select:focus-visible { outline: 3px solid #f0a202; outline-offset: 2px; }
.skip { position: absolute; left: -9999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; z-index: 10; }
header { background: #0f2537; color: #fff; padding: 8px 24px; display: flex; gap: 24px; align-items: center; flex-wrap: wrap; }
header .brand { font-weight: 700; font-size: 1.1rem; }
header nav ul { list-style: none; display: flex; gap: 16px; margin: 0; padding: 0; flex-wrap: wrap; }
header nav a { color: #fff; text-decoration: none; padding: 4px 2px; }
header nav a[aria-current="page"] { border-bottom: 3px solid #f0a202; }
header .who { margin-left: auto; display: flex; gap: 12px; align-items: center; }
header .who button { background: transparent; color: #fff; border: 1px solid #fff; }
header .muted { color: #d5dde5; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0, 0, 0, 0); white-space: nowrap; border: 0; }
main { padding: 16px 24px 48px; max-width: 1200px; }
h1 { font-size: 1.6rem; margin: 8px 0 16px; } h2 { font-size: 1.25rem; margin: 24px 0 8px; } h3 { font-size: 1.05rem; margin: 16px 0 8px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 0.95rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; word-break: break-all; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 12px 0; background: #fff; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.85rem; border: 1px solid currentColor; }
.badge.ok { color: var(--ok); } .badge.bad { color: var(--danger); } .badge.warn { color: var(--warn); }
form.inline { display: inline-flex; gap: 8px; align-items: end; flex-wrap: wrap; margin: 4px 0; }
label { display: block; font-weight: 600; font-size: 0.9rem; }
input, textarea, select { font: inherit; padding: 6px 8px; border: 1px solid #6b7785; border-radius: 4px; }
button { font: inherit; padding: 6px 14px; border-radius: 4px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
button.danger { background: var(--danger); border-color: var(--danger); }
button.secondary { background: #fff; color: var(--accent); }
.notice { padding: 8px 12px; border-left: 4px solid var(--accent); background: var(--panel); margin: 12px 0; }
.notice.error { border-color: var(--danger); }
svg text { font: 12px system-ui, sans-serif; fill: var(--fg); }
svg .node rect { fill: #e8f0fa; stroke: #0b5cad; stroke-width: 1.5; }
svg .node-label { font-weight: 700; fill: #0f2537; } svg .node-id { font-family: ui-monospace, monospace; font-size: 11px; }
svg .edge { stroke: #0f2537; stroke-width: 2; } svg .arrowhead { fill: #0f2537; }
svg .grid { stroke: #c9d1d9; stroke-width: 1; }
svg .series-issued { stroke: #0b5cad; stroke-width: 2.5; } svg .series-refused { stroke: #a4161a; stroke-width: 2.5; stroke-dasharray: 6 3; }
svg .swatch-issued { fill: #0b5cad; } svg .swatch-refused { fill: #a4161a; }
svg .bar-up { fill: #a4161a; } svg .bar-down { fill: #196c2e; } svg .bar-total { fill: #0f2537; } svg .total { font-weight: 700; }
.scroll { overflow-x: auto; }
pre { background: var(--panel); padding: 8px; overflow-x: auto; white-space: pre-wrap; }
`
