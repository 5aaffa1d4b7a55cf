"""The page every demo serves: a button that sends 50 requests at once, each
adding one item to a cart kept in the session, and what became of them.

Each click tags its items with an id of its own, so it counts only its own
items: two tabs clicked at once each report their own 50, and the cart holds
all 100, the count both tabs show once both clicks are done (the tabs tell each
other through a BroadcastChannel). The page's own request starts the session
(the demos' ``home`` handlers), so that the 50 requests share its cookie."""

from __future__ import annotations

from html import escape

_STYLE = """
:root{color-scheme:light dark;--accent:#3b5bdb;--ok:#2b8a3e;--bad:#c92a2a;--muted:#868e96}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:2.5em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
.sub{color:var(--muted);margin-top:0}
.card{border:1px solid #8884;border-radius:12px;padding:1.2em 1.4em;margin:1.5em 0}
.count{font-size:3em;font-weight:700;line-height:1;font-variant-numeric:tabular-nums}
button{font:inherit;padding:.55em 1.1em;border-radius:8px;border:1px solid var(--accent);
 background:var(--accent);color:#fff;cursor:pointer;margin-right:.5em}
button.plain{background:transparent;color:var(--accent)}
button:disabled{opacity:.5;cursor:wait}
#note{min-height:1.5em;font-weight:600}
#note.ok{color:var(--ok)} #note.bad{color:var(--bad)}
ol{padding-left:1.2em} code{font-size:.9em}
footer{color:var(--muted);font-size:.9em}
"""

_SCRIPT = """
const $ = (id) => document.getElementById(id);
const N = 50;
// This page's tabs tell each other when a click starts and ends: a tab whose
// click is done while another tab's still sends shows the cart's count once
// every click is done, not a count that the other tab's items are still
// joining. (The page's own request, GET /, started the session, so every
// fetch below carries its cookie.)
const tabs = new BroadcastChannel("sessionware-demo");
const running = new Set();  // the clicks still sending, in every tab
let mine = null;            // this tab's click, while it sends
const cart = async () => (await (await fetch("cart")).json()).items;
const show = async () => { $("count").textContent = (await cart()).length; };
const showWhenAllDone = async () => { if (running.size === 0) await show(); };
const note = (text, kind) => { $("note").textContent = text; $("note").className = kind || ""; };
tabs.onmessage = async ({data}) => {
  if (data.started) running.add(data.started);
  if (data.done) { running.delete(data.done); await showWhenAllDone(); }
  if (data.emptied) await showWhenAllDone();
};
addEventListener("pagehide", () => { if (mine) tabs.postMessage({done: mine}); });
$("add").onclick = async () => {
  $("add").disabled = true;
  note(`sending ${N} requests at once…`);
  // This click's own tag: the cart may also hold items from other tabs' clicks.
  const click = mine = Math.random().toString(36).slice(2, 10);
  running.add(click);
  tabs.postMessage({started: click});
  const answers = await Promise.all(Array.from({length: N}, (_, i) =>
    fetch(`cart/add?item=${click}-${i}`, {method: "POST"}).then(r => r.status)));
  const items = await cart();
  const arrived = items.filter(item => item.startsWith(click + "-")).length;
  const failed = answers.filter(status => status !== 200).length;
  running.delete(click);
  mine = null;
  tabs.postMessage({done: click});
  // Another tab still sending: the count waits for it (its message shows it).
  $("count").textContent = running.size ? "…" : items.length;
  note(`this click: ${arrived} of ${N} items arrived` +
       (failed ? ` (${failed} requests failed)` : ""), arrived === N ? "ok" : "bad");
  $("add").disabled = false;
};
$("empty").onclick = async () => {
  await fetch("cart/clear", {method: "POST"});
  tabs.postMessage({emptied: true});
  note("");
  await show();
};
show();
"""


READ_RULE = 'Rule("read", paths=["/cart"], methods=["GET"])'


def page(framework: str, handler: str, reading: str = READ_RULE) -> str:
    """The demo page; ``framework`` and ``handler`` name the server side,
    ``reading`` how it declares that reading the cart takes no lock."""
    return f"""<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sessionware demo ({escape(framework)})</title>
<style>{_STYLE}</style>
<h1>50 requests at once, one cart</h1>
<p class="sub">sessionware demo on {escape(framework)}, sessions in SQLite</p>
<div class="card">
  <div>Your cart holds <span class="count" id="count">…</span> items</div>
  <p id="note" role="status"></p>
  <button id="add">Add {50} items at once</button>
  <button id="empty" class="plain">Empty the cart</button>
</div>
<p>The button sends 50 requests in parallel. Each one {escape(handler)}: it reads
the cart from the session, works for 10 ms, and writes the cart back with one
more item.</p>
<ol>
  <li>With a session that is loaded and saved whole, as most session libraries do,
  the 50 requests read the same cart, and the last one to save wins: most of the
  items are lost, silently.</li>
  <li>sessionware locks the session for each request, from its load to its commit,
  so the requests take turns: all 50 items arrive. Open this page in a second tab
  and click in both at once: each click counts its own 50, and the cart holds them
  all.</li>
</ol>
<p>Nothing can lock a session that does not exist yet: 50 requests sent before
the browser has a session cookie would each start a session of their own. So this
page's own request starts the session (its handler writes the empty cart), and the
50 requests carry its cookie.</p>
<footer>Reading the cart (<code>GET /cart</code>) takes no lock:
<code>{escape(reading)}</code>.</footer>
<script>{_SCRIPT}</script>
</html>
"""
