'use strict';
/*
 * The LuCI views of luci-app-cpe-tunnel run against recording stand-ins of LuCI's
 * client modules (tests/luci/standins.js; not LuCI itself): the status page for
 * sample replies of the daemon (up behind NAT, down with an error, no prefix,
 * TSP with drops and the UDP fallback, TSP v4v6, TIC starting, SixXS waiting for
 * the clock, a MOTD with markup shown as text, daemon not answering), its polling and Reconnect
 * button; the configuration form (sections, tabs, masking, depends, ISP-locked
 * options read-only and never written, save semantics); the protocol plugin.
 * Run: node --test tests/luci/views.test.js
 */

const test = require('node:test');
const assert = require('node:assert/strict');
const { makeEnv, sample, sections, rows, texts } = require('./harness.js');

const NOW = 1795389960;  /* 30 s after the samples' "since" */

function withClock(t) {
	const real = Date.now;
	Date.now = () => NOW * 1000;
	t.after(() => { Date.now = real; });
}

function renderStatus(reply, opts) {
	const env = makeEnv(opts);
	if (reply !== undefined)
		env.rpc.reply('cpe_tunnel', 'status', reply);
	return env.runView('view.cpe_tunnel.status').then(r => Object.assign(r, { env: env }));
}

/* the status table as {label: text} */
function statusTable(node) {
	const out = {};
	for (const tr of node.querySelectorAll('table.cpe-tunnel-status tr')) {
		const td = tr.querySelectorAll('td');
		out[td[0].textContent] = td[1].textContent;
	}
	return out;
}

/* ------------------------------------------------------------------ status */

test('status: up behind a NAT (real lab reply)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-up-nat.json'));
	const tab = statusTable(node);
	assert.match(node.querySelector('.cpe-tunnel-banner').textContent, /^Connected — tunnel up$/);
	assert.ok(node.querySelector('.cpe-tunnel-banner').classList.contains('cpe-tunnel-up'));
	assert.match(tab['Up for'], /^\d+ s \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$/);
	assert.equal(tab['Tunnel'], 'he: 6in4 with HTTP endpoint update, userspace data plane, device cpe6in4');
	assert.equal(tab['WAN'], '198.51.100.2 on wan0');
	assert.equal(tab['NAT'], 'yes: this router is behind a NAT');
	assert.equal(tab['Public IPv4'], '203.0.113.2');
	assert.equal(tab['Broker'], '203.0.113.18');
	assert.equal(tab['Update URL'], 'http://203.0.113.18/nic/update');
	assert.equal(tab['Tunnel IPv6'], '2001:db8:1::2/64, broker side 2001:db8:1::1');
	assert.equal(tab['Delegated prefix'], '2001:db8:1234::/48');
	assert.equal(tab['LAN /64s'], '2001:db8:1234::/64 on br-lan; Router Advertisements about every 10 s');
	assert.equal(tab['Traffic'], 'sent 6 packets (448 B), received 1 packet (68 B)');
	assert.equal(tab['Dropped packets'], 'none');
	assert.match(tab['Keepalive'], /^the broker answers; every 5 s when idle; round trip 1\.5 ms$/);
	assert.match(tab['Last broker update'], /^ok: the broker now has 203\.0\.113\.2 as the tunnel endpoint \(\d+ s ago\)$/);
	assert.equal(tab['Last error'], 'none');
	assert.equal(tab['Configuration problem'], undefined);
	/* the 6in4 page as before (and as in docs/luci-status.png): these rows, in this order */
	assert.deepEqual(Object.keys(tab), [ 'Up for', 'Tunnel', 'WAN', 'NAT', 'Public IPv4', 'Broker', 'Update URL',
		'Tunnel IPv6', 'Delegated prefix', 'LAN /64s', 'Traffic', 'Last packet', 'Dropped packets', 'Keepalive',
		'Last broker update', 'Last error' ]);
	/* each LAN and each drop reason is an element of its own, not "[object ...]" text */
	assert.equal(node.querySelectorAll('table tr').find(tr => tr.firstChild.textContent === 'LAN /64s')
		.querySelectorAll('div').length, 1);
});

test('status: a 6in4 reply of today\'s daemon (answer_timeout, now) looks as before', async t => {
	withClock(t);
	const before = statusTable((await renderStatus(sample('status-up-nat.json'))).node);
	const reply = sample('status-up-nat.json');
	reply.keepalive.answer_timeout = 1;
	reply.now = NOW;
	const after = statusTable((await renderStatus(reply)).node);
	assert.deepEqual(after, before);
});

test('status: down with an error (real lab reply, wrong update key)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-down-auth-failed.json'));
	const tab = statusTable(node);
	const banner = node.querySelector('.cpe-tunnel-banner');
	assert.equal(banner.textContent, 'Not connected — the broker rejected the username or update key');
	assert.ok(banner.classList.contains('cpe-tunnel-down'));
	assert.equal(tab['Last error'], 'the broker rejected the username or update key');
	assert.ok(node.querySelector('table .cpe-tunnel-error'), 'the last error is highlighted');
	assert.match(tab['Last broker update'], /^auth-failed: the broker rejected the username or update key \(\d+ s ago\)$/);
	assert.equal(tab['Next retry'], 'in 60 min');
	assert.equal(tab['NAT'], 'not seen');
	assert.equal(tab['Public IPv4'], undefined, 'no public address known: no row');
	assert.equal(tab['Since'] !== undefined, true, 'down: "Since", not "Up for"');
	assert.equal(tab['Up for'], undefined);
});

test('status: no delegated prefix, no LAN (real lab reply, mode static)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-up-static-no-prefix.json'));
	const tab = statusTable(node);
	assert.equal(tab['Delegated prefix'], 'none');
	assert.equal(tab['LAN /64s'], 'none');
	assert.equal(tab['Tunnel'], 'he: 6in4 with fixed endpoints, userspace data plane, device cpe6in4');
	assert.equal(tab['Keepalive'], 'not probed yet; every 5 s when idle');
	assert.equal(tab['Last broker update'], undefined, 'static mode has no broker update');
	assert.match(tab['Last packet'], /^sent \d+ s ago, received never$/);
});

test('status: TSP fallback, dropped packets, deprecated prefix (synthetic)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-up-tsp-drops.synthetic.json'));
	const tab = statusTable(node);
	assert.equal(tab['Broker'], '203.0.113.18, 203.0.113.18:3653');
	assert.equal(tab['TSP tunnel'], 'IPv6 in UDP over IPv4 (v6udpv4), asked for IPv6 in IPv4, or in UDP behind a NAT (v6anyv4); session 2 over UDP');
	assert.equal(tab['TSP fallback'], 'protocol 41 blocked on the path: using IPv6 in UDP');
	assert.equal(tab['Keepalive target'], '2001:db8:1::1');
	assert.equal(tab['NAT'], 'yes: this router is behind a NAT');
	assert.equal(tab['Tunnel endpoints'], undefined, '6in4: no IPv6 endpoints');
	assert.equal(tab['LAN IPv4'], undefined);
	assert.equal(tab['Dropped packets'], 'foreign source: 3truncated IPv6 packet: 1');
	assert.equal(node.querySelectorAll('table tr')
		.find(tr => tr.firstChild.textContent === 'Dropped packets').querySelectorAll('div').length, 2);
	assert.match(tab['LAN /64s'], /deprecating 2001:db8:5678::\/64$/);
});

test('status: TIC starting with the clock off (synthetic)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-starting-tic-clock.synthetic.json'));
	const tab = statusTable(node);
	assert.equal(node.querySelector('.cpe-tunnel-banner').textContent,
		'Connecting — fetching the tunnel from the TIC server');
	assert.equal(tab['Tunnel'], 'sixxs: SixXS-style TIC, none yet data plane, device cpe6in4');
	assert.match(tab['TIC error'], /clock is 600 s behind/);
	assert.match(tab['Last error'], /clock is 600 s behind/);
	assert.equal(tab['Traffic'], undefined, 'no data plane yet: no counters');
	assert.equal(tab['LAN /64s'], 'no prefix on br-lan; Router Advertisements about every 600 s');
});

test('status: TSP v4v6, IPv4 in IPv6 over an IPv6-only WAN (real lab reply)', async t => {
	withClock(t);
	const { node, env } = await renderStatus(sample('status-up-tsp-v4v6.json'));
	const tab = statusTable(node);
	assert.equal(node.querySelector('.cpe-tunnel-banner').textContent, 'Connected — tunnel up');
	assert.equal(tab['Up for'].split(' (')[0], '0 s', 'ages from the reply\'s own clock ("now")');
	assert.equal(tab['Tunnel'], 'he: TSP broker, userspace data plane, device cpe6in4');
	assert.equal(tab['WAN'], '2001:db8:c0::2 on wan0');
	assert.equal(tab['Public IPv6'], '2001:db8:c0::2');
	assert.equal(tab['Public IPv4'], undefined);
	assert.equal(tab['NAT'], undefined, 'no IPv4 on the WAN: no NAT row');
	assert.equal(tab['Broker'], '2001:db8:c2::2, [2001:db8:c2::2]:3653');
	assert.equal(tab['Tunnel IPv4'], '203.0.113.66/32, broker side 203.0.113.65');
	assert.equal(tab['Tunnel IPv6'], undefined);
	assert.equal(tab['Tunnel endpoints'], '2001:db8:c0::2 on this router, 2001:db8:c2::2 at the broker');
	assert.equal(tab['Delegated prefix'], '203.0.113.128/28');
	assert.equal(tab['LAN IPv4'], '203.0.113.129/28 on br-lan');
	assert.equal(tab['LAN /64s'], undefined, 'v4v6 gives the LAN IPv4 only');
	assert.equal(tab['TSP tunnel'], 'IPv4 in IPv6 (v4v6); session 1 over UDP');
	assert.equal(tab['TSP fallback'], undefined);
	assert.equal(tab['Keepalive target'], '203.0.113.65');
	assert.equal(tab['Keepalive'], 'not probed yet; every 2 s when idle');
	assert.equal(tab['Last error'], 'none');
	assert.deepEqual(env.record.innerHTML, []);
});

test('status: v4v6 before the broker gave an IPv4 prefix and a LAN address', async t => {
	withClock(t);
	const reply = sample('status-up-tsp-v4v6.json');
	delete reply.lan4;
	reply.delegated_prefixes4 = [];
	delete reply.wan.local_ipv6;
	reply.tsp = { requested: 'v4v6', sessions: 0 };
	const tab = statusTable((await renderStatus(reply)).node);
	assert.equal(tab['LAN IPv4'], 'none');
	assert.equal(tab['Delegated prefix'], 'none');
	assert.equal(tab['WAN'], 'no IPv6 address (wan0)');
	assert.equal(tab['TSP tunnel'], 'no tunnel yet, asking for IPv4 in IPv6 (v4v6)');
});

test('status: SixXS waiting for the clock, no tunnel yet (real lab reply)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-down-tic-clock.json'));
	const tab = statusTable(node);
	assert.match(node.querySelector('.cpe-tunnel-banner').textContent, /^Not connected — the router's clock is 600 seconds behind/);
	assert.equal(tab['SixXS tunnel'], 'not fetched yet');
	assert.equal(tab['Clock'], 'waiting for the router\'s clock to be set (watching for it), ' +
		'then asking the TIC server again, at the latest in 59 s');
	assert.equal(tab['Next TIC request'], undefined, 'said in the clock row');
	assert.match(tab['TIC error'], /set the time \(NTP\)/);
	assert.equal(tab['PoP message'], undefined);
	assert.equal(tab['Messages from the PoP'], undefined, 'none received: no row');
});

test('status: SixXS up with a MOTD from the PoP (real lab reply)', async t => {
	withClock(t);
	const { node } = await renderStatus(sample('status-up-tic-ayiya-motd.json'));
	const tab = statusTable(node);
	assert.equal(tab['SixXS tunnel'], 'T5072 (ayiya) at PoP tstpop01, configuration from the TIC server');
	assert.equal(tab['PoP message'], 'Maintenance tonight?[2J 02:00-03:00 UTC (received 0 s ago)');
	assert.equal(tab['Messages from the PoP'], 'motd: 1');
	assert.equal(tab['Clock'], undefined);
	assert.equal(tab['TIC error'], undefined);
	assert.equal(tab['Keepalive'], 'the broker answers; every 2 s when idle; round trip 2.1 ms');
});

test('status: SixXS on the saved config, waiting for the clock, a MOTD with markup (synthetic)', async t => {
	withClock(t);
	const reply = sample('status-up-tic-clock-motd.synthetic.json');
	const { node, env } = await renderStatus(reply);
	const tab = statusTable(node);
	assert.equal(tab['SixXS tunnel'], 'T5072 (ayiya) at PoP tstpop01, configuration from the copy saved ' +
		'from the last TIC session (TIC server not reachable)');
	assert.equal(tab['Clock'], 'waiting for the router\'s clock to be set (watching for it), ' +
		'then asking the TIC server again, at the latest in 42 s');
	/* the MOTD is text from the network: shown literally, never parsed as HTML */
	const motd = node.querySelector('table .cpe-tunnel-motd');
	assert.equal(motd.textContent, '<b>PoP maintenance</b> <img src=x onerror=alert(1)> & reboot at 02:00');
	assert.equal(motd.childNodes.length, 1);
	assert.equal(motd.firstChild.nodeType, 3, 'a text node');
	assert.equal(node.querySelector('table img'), null);
	assert.equal(node.querySelector('table b'), null);
	assert.deepEqual(env.record.innerHTML, [], 'nothing went through innerHTML');
	assert.equal(tab['PoP message'], reply.sixxs.motd.text + ' (received 5 min ago, again 5 s ago)');
	const rx = node.querySelectorAll('table tr').find(tr => tr.firstChild.textContent === 'Messages from the PoP');
	assert.deepEqual(rx.querySelectorAll('div').map(d => d.textContent), [ 'motd: 3', 'unverified: 1' ]);
	assert.match(tab['Last error'], /clock is 600 seconds behind/);
});

test('status: SixXS heartbeat, paused without a WAN address; next TIC request', async t => {
	withClock(t);
	const reply = sample('status-up-tic-ayiya-motd.json');
	reply.sixxs.type = '6in4-heartbeat';
	delete reply.sixxs.motd;
	reply.sixxs.control_rx = {};
	reply.sixxs.next_tic_in = 3600;
	reply.sixxs.heartbeat = { interval: 60, sent: 7, last_sent_age: 12.5, paused: true };
	let tab = statusTable((await renderStatus(reply)).node);
	assert.equal(tab['Heartbeat'], 'paused: no IPv4 address on the WAN (every 60 s, 7 sent, the last 12 s ago)');
	assert.equal(tab['Next TIC request'], 'in 60 min');
	assert.equal(tab['PoP message'], undefined);
	reply.sixxs.heartbeat = { interval: 60, sent: 0, paused: false };
	tab = statusTable((await renderStatus(reply)).node);
	assert.equal(tab['Heartbeat'], 'every 60 s, 0 sent');
});

test('status: the keepalive tells its answer timeout when echoes go unanswered', async t => {
	withClock(t);
	const reply = sample('status-up-nat.json');
	Object.assign(reply.keepalive, { alive: false, missed_in_a_row: 3, answer_timeout: 1.2, rtt_ms: 2 });
	let tab = statusTable((await renderStatus(reply)).node);
	assert.equal(tab['Keepalive'], 'the broker does NOT answer; every 5 s when idle; round trip 2.0 ms; ' +
		'3 echoes in a row not answered within 1.2 s');
	Object.assign(reply.keepalive, { alive: true, missed_in_a_row: 1 });
	tab = statusTable((await renderStatus(reply)).node);
	assert.match(tab['Keepalive'], /^the broker answers; .*; 1 echo in a row not answered within 1\.2 s$/);
});

test('status: odd shapes in the sixxs and tsp parts do not break the page', async t => {
	withClock(t);
	const reply = sample('status-down-tic-clock.json');
	reply.sixxs = { tunnel_id: 'T1', motd: { text: 42 }, control_rx: 'x', heartbeat: {} };
	reply.tsp = {};
	const { node } = await renderStatus(reply);
	const tab = statusTable(node);
	assert.equal(tab['SixXS tunnel'], 'T1 (?) at PoP ?, configuration from ?');
	assert.equal(tab['PoP message'], '42');
	assert.equal(tab['Messages from the PoP'], undefined);
	assert.equal(tab['Heartbeat'], 'every 0 s, 0 sent');
	assert.equal(tab['TSP tunnel'], 'no tunnel yet, asking for ?');
});

test('stand-ins: E() and dom.append behave as LuCI\'s (so the tests above can fail)', () => {
	const env = makeEnv();
	/* a bare string child is HTML in LuCI (innerHTML) ... */
	const html = E('div', {}, '<b>x</b>');
	assert.equal(html.querySelectorAll('b').length, 1);
	assert.deepEqual(env.record.innerHTML, [ '<b>x</b>' ]);
	/* ... strings in an array are text; a nested array becomes text too */
	const text = E('div', {}, [ '<b>x</b>' ]);
	assert.equal(text.querySelector('b'), null);
	assert.equal(text.textContent, '<b>x</b>');
	const nested = E('div', {}, [ [ E('span', {}, [ 'a' ]) ] ]);
	assert.equal(nested.querySelector('span'), null);
	assert.match(nested.textContent, /object/);
	const dom = env.require('dom');
	dom.content(text, '<i>y</i>');
	assert.equal(text.querySelectorAll('i').length, 1);
});

test('status: the daemon does not answer', async () => {
	/* no reply registered: the stand-in rpc rejects as rpcd does for a missing object */
	const { node } = await renderStatus(undefined);
	const box = node.querySelector('.cpe-tunnel-unreachable');
	assert.ok(box);
	assert.match(box.textContent, /does not answer/);
	assert.match(box.textContent, /Object not found/);
	assert.equal(node.querySelector('table.cpe-tunnel-status'), null);
});

test('status: a reply without a state is not shown as a status', async () => {
	const { node } = await renderStatus(4);  /* a bare ubus status code */
	assert.match(node.querySelector('.cpe-tunnel-unreachable').textContent, /gave no status/);
});

test('status: polls cpe_tunnel status every 5 s and redraws', async t => {
	withClock(t);
	const { node, env } = await renderStatus(sample('status-up-nat.json'));
	assert.deepEqual(env.record.polls.map(p => p.interval), [ 5 ]);
	assert.equal(env.record.rpcCalls.length, 1);
	env.rpc.reply('cpe_tunnel', 'status', sample('status-down-auth-failed.json'));
	await env.poll.tick();
	assert.deepEqual(env.record.rpcCalls.map(c => c.object + '.' + c.method),
		[ 'cpe_tunnel.status', 'cpe_tunnel.status' ]);
	assert.match(node.querySelector('.cpe-tunnel-banner').textContent, /^Not connected/);
	assert.equal(node.querySelectorAll('.cpe-tunnel-banner').length, 1, 'redrawn in place');
});

test('status: Reconnect calls cpe_tunnel reconnect, tells the user, refreshes', async t => {
	withClock(t);
	const { node, env } = await renderStatus(sample('status-down-auth-failed.json'));
	env.rpc.reply('cpe_tunnel', 'reconnect', { message: 'reconnecting' });
	env.rpc.reply('cpe_tunnel', 'status', sample('status-up-nat.json'));
	const button = node.querySelectorAll('button').find(b => b.textContent === 'Reconnect');
	assert.ok(button, 'a Reconnect button');
	await Promise.all(button.click());
	assert.deepEqual(env.record.rpcCalls.map(c => c.method), [ 'status', 'reconnect', 'status' ]);
	assert.equal(env.record.notifications.length, 1);
	assert.match(env.record.notifications[0].text, /Reconnecting: .*\(reconnecting\)/);
	assert.match(node.querySelector('.cpe-tunnel-banner').textContent, /^Connected/);
});

test('status: a failing Reconnect is reported', async t => {
	withClock(t);
	const { node, env } = await renderStatus(sample('status-up-nat.json'));
	env.rpc.reply('cpe_tunnel', 'reconnect', env.rpc.error(-32002, 'Access denied'));
	const button = node.querySelectorAll('button').find(b => b.textContent === 'Reconnect');
	await Promise.all(button.click());
	assert.equal(env.record.notifications.length, 1);
	assert.match(env.record.notifications[0].text, /Reconnect failed: .*Access denied/);
	assert.deepEqual(env.record.notifications[0].classes, [ 'danger' ]);
});

test('status: declares exactly the ubus methods status and reconnect', async () => {
	const { env } = await renderStatus(sample('status-up-nat.json'));
	assert.deepEqual(env.record.rpcDeclares.map(d => d.object + '.' + d.method).sort(),
		[ 'cpe_tunnel.reconnect', 'cpe_tunnel.status' ]);
});

/* ------------------------------------------------------------------ i18n */

/* With a pseudo-translation every text the views write themselves comes out
 * marked; what is left unmarked must be data from the reply or the config. */
function unmarked(node, data) {
	const strings = new Set();
	(function walk(x) {
		if (typeof x === 'string' || typeof x === 'number') strings.add(String(x));
		else if (Array.isArray(x)) x.forEach(walk);
		else if (x && typeof x === 'object') { Object.keys(x).forEach(k => { strings.add(k); walk(x[k]); }); }
	})(data);
	const bad = [];
	for (const text of texts(node)) {
		let rest = text, prev;
		do {
			prev = rest;
			rest = rest.replace(/«[^«»]*»/g, ' ');
		} while (rest !== prev);
		for (const s of Array.from(strings).sort((a, b) => b.length - a.length))
			if (s.length > 1)
				rest = rest.split(s).join(' ');
		if (/[A-Za-z]{3,}/.test(rest))
			bad.push(text);
	}
	return bad;
}

const pseudo = { translate: s => '«' + s + '»' };

test('i18n: every word on the status page goes through _()', async t => {
	withClock(t);
	for (const name of [ 'status-up-nat.json', 'status-down-auth-failed.json', 'status-up-tsp-drops.synthetic.json',
		'status-starting-tic-clock.synthetic.json', 'status-up-static-no-prefix.json', 'status-up-tsp-v4v6.json',
		'status-down-tic-clock.json', 'status-up-tic-ayiya-motd.json', 'status-up-tic-clock-motd.synthetic.json' ]) {
		const data = sample(name);
		const { node } = await renderStatus(data, pseudo);
		assert.deepEqual(unmarked(node, data), [], name);
	}
	const { node } = await renderStatus(undefined, pseudo);
	assert.deepEqual(unmarked(node, { error: 'RPC call failed with error -32000: Object not found' }), []);
});

test('i18n: every word of the configuration form goes through _()', async () => {
	const env = makeEnv(pseudo);
	const cfg = sections({
		main: [ 'globals', {} ],
		he: [ 'tunnel', { mode: 'http-update', locked: [ 'peeraddr' ] } ],
		lan1: [ 'lan', { interface: 'br-lan' } ]
	});
	env.uci.seed('cpe_tunnel', cfg);
	const node = await env.require('view.cpe_tunnel.config').render();
	const common = env.require('cpe_tunnel.common');
	const data = [ cfg, common.OPTIONS, 'cpe_tunnel', 'he', 'lan1', 'main', '∗', '×', '+' ];
	assert.deepEqual(unmarked(node, data), []);
});

/* ------------------------------------------------------------------ config form */

function configEnv(extra) {
	const env = makeEnv();
	env.uci.seed('cpe_tunnel', sections(Object.assign({
		main: [ 'globals', { enabled: '1' } ],
		he: [ 'tunnel', {
			mode: 'http-update', peeraddr: '203.0.113.1', ip6addr: '2001:db8:1::2/64',
			ip6prefix: [ '2001:db8:2::/64' ], username: 'example-user', updatekey: 'example-update-key',
			tunnelid: '123456', defaultroute: 'yes'
		} ],
		lan1: [ 'lan', { interface: 'br-lan' } ]
	}, extra || {})));
	return env;
}

async function renderConfig(env) {
	const node = await env.require('view.cpe_tunnel.config').render();
	return { node: node, map: env.record.maps[env.record.maps.length - 1], rows: rows(node) };
}

function widget(map, type, sid, option) {
	const s = map.children.find(x => x.sectiontype === type);
	return s.getOption(option).getUIElement(sid);
}

test('config: one form over cpe_tunnel with service, tunnel and LAN sections', async () => {
	const env = configEnv();
	const { map, node } = await renderConfig(env);
	assert.equal(map.config, 'cpe_tunnel');
	assert.deepEqual(env.record.uciLoads, [ [ 'cpe_tunnel' ] ]);
	assert.deepEqual(map.children.map(s => [ s.__name__, s.sectiontype ]), [
		[ 'CBI.NamedSection', 'globals' ], [ 'CBI.TypedSection', 'tunnel' ], [ 'CBI.TypedSection', 'lan' ]
	]);
	const tunnel = map.children[1];
	assert.deepEqual(tunnel.tab_names, [ 'general', 'broker', 'advanced' ]);
	assert.equal(node.querySelectorAll('.cbi-tabmenu li').length, 3);
});

test('config: secrets are masked, other fields are not', async () => {
	const { rows: r } = await renderConfig(configEnv());
	for (const opt of [ 'updatekey', 'password' ])
		assert.equal(r.he[opt].querySelector('input').getAttribute('type'), 'password', opt);
	for (const opt of [ 'username', 'tunnelid', 'peeraddr', 'update_url' ])
		assert.equal(r.he[opt].querySelector('input').getAttribute('type'), 'text', opt);
	/* the secret is in the field (LuCI shows it on demand), never in a placeholder */
	assert.equal(r.he.updatekey.querySelector('input').getAttribute('placeholder'), null);
});

test('config: defaults are shown as placeholders, not written', async () => {
	const env = configEnv();
	const { rows: r, map } = await renderConfig(env);
	assert.equal(r.he.mtu.querySelector('input').getAttribute('placeholder'), '1280');
	assert.equal(r.he.mtu.querySelector('input').value, '');
	assert.equal(r.he.update_url.querySelector('input').getAttribute('placeholder'), 'https://ipv4.tunnelbroker.net/nic/update');
	assert.equal(r.lan1.ra_interval.querySelector('input').getAttribute('placeholder'), '600');
	await map.save();
	const touched = env.record.uciChanges.filter(c => c[0] === 'set').map(c => c[2] + '.' + c[3]);
	for (const x of [ 'he.mtu', 'he.update_url', 'lan1.ra_interval', 'he.username', 'he.updatekey' ])
		assert.ok(touched.indexOf(x) < 0, x + ' must not be written: ' + touched);
});

test('config: a hand-written boolean such as "yes" shows as checked and is kept', async () => {
	const env = configEnv();
	const { rows: r, map } = await renderConfig(env);
	assert.equal(r.he.defaultroute.querySelector('input').checked, true);
	await map.save();
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'defaultroute'), 'yes');
});

test('config: only the fields of the chosen mode are shown', async () => {
	const env = configEnv();
	const { rows: r, map } = await renderConfig(env);
	const visible = () => Object.keys(r.he).filter(o => !r.he[o].classList.contains('hidden'));
	const http = visible();
	for (const o of [ 'peeraddr', 'ip6addr', 'username', 'updatekey', 'password', 'tunnelid', 'update_url', 'send_myip' ])
		assert.ok(http.indexOf(o) >= 0, o);
	for (const o of [ 'server', 'auth', 'tunnel_mode', 'tic_tls' ])
		assert.ok(http.indexOf(o) < 0, o);

	widget(map, 'tunnel', 'he', 'mode').setValue('tsp');
	map.checkDepends();
	const tsp = visible();
	for (const o of [ 'server', 'username', 'password', 'auth', 'tunnel_mode', 'host_type', 'prefix_len', 'tsp_transport', 'mtu' ])
		assert.ok(tsp.indexOf(o) >= 0, o);
	for (const o of [ 'peeraddr', 'ip6addr', 'updatekey', 'tunnelid', 'update_url', 'tic_tls' ])
		assert.ok(tsp.indexOf(o) < 0, o);

	widget(map, 'tunnel', 'he', 'mode').setValue('tic');
	map.checkDepends();
	const tic = visible();
	for (const o of [ 'server', 'username', 'password', 'tunnelid', 'tic_tls', 'tls_verify', 'ca_file' ])
		assert.ok(tic.indexOf(o) >= 0, o);
	for (const o of [ 'peeraddr', 'updatekey', 'auth', 'update_url' ])
		assert.ok(tic.indexOf(o) < 0, o);
});

test('config: switching mode and saving drops the other mode\'s options (LuCI semantics)', async () => {
	const env = configEnv();
	const { map } = await renderConfig(env);
	widget(map, 'tunnel', 'he', 'mode').setValue('tsp');
	widget(map, 'tunnel', 'he', 'server').setValue([ 'broker.example.net' ]);
	await map.save();
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'mode'), 'tsp');
	assert.deepEqual(env.uci.get('cpe_tunnel', 'he', 'server'), [ 'broker.example.net' ]);
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'peeraddr'), null);
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'updatekey'), null);
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'username'), 'example-user', 'used in tsp too');
	assert.equal(env.record.uciSaves, 1);
});

test('config: a bad value stops the save with the daemon\'s words', async () => {
	const env = configEnv();
	const { map, rows: r } = await renderConfig(env);
	widget(map, 'tunnel', 'he', 'mtu').setValue('9000');
	await assert.rejects(map.save(null, true), /mtu: expected an integer from 1280 to 1480/);
	assert.equal(env.record.uciSaves, 0);
	assert.ok(r.he.mtu.querySelector('input').classList.contains('cbi-input-invalid'));
});

test('config: required in one mode, optional in another (username)', async () => {
	const env = configEnv();
	const { map } = await renderConfig(env);
	widget(map, 'tunnel', 'he', 'username').setValue('');
	await assert.rejects(map.save(null, true), /username: required in mode http-update/);
	widget(map, 'tunnel', 'he', 'mode').setValue('tsp');
	widget(map, 'tunnel', 'he', 'server').setValue([ '203.0.113.18' ]);
	await map.save(null, true);
	assert.equal(env.uci.get('cpe_tunnel', 'he', 'username'), null, 'anonymous TSP');
});

test('config: ISP-locked options are read-only and never written', async () => {
	const env = configEnv({
		isp: [ 'tunnel', {
			enabled: '0', mode: 'http-update', peeraddr: '198.51.100.1', ip6addr: '2001:db8:9::2/64',
			username: 'isp-customer-17', updatekey: 'k', tunnelid: '777',
			update_url: 'https://broker.example/nic/update', locked: [ 'peeraddr', 'update_url', 'tunnelid' ]
		} ]
	});
	const { map, rows: r, node } = await renderConfig(env);
	for (const o of [ 'peeraddr', 'update_url', 'tunnelid' ]) {
		assert.ok(r.isp[o].querySelector('input').hasAttribute('disabled'), 'isp.' + o + ' read-only');
		assert.match(r.isp[o].textContent, /Set by your Internet provider; read-only\./);
		assert.ok(!r.he[o].querySelector('input').hasAttribute('disabled'), 'he.' + o + ' editable');
	}
	assert.ok(!r.isp.username.querySelector('input').hasAttribute('disabled'));
	assert.equal(r.isp._locked.textContent.indexOf('peeraddr, update_url, tunnelid') >= 0, true);
	assert.equal(r.he._locked, undefined, 'no "set by your provider" row without locked options');

	/* even if the value in the widget changed, or the mode hides it, it stays */
	widget(map, 'tunnel', 'isp', 'peeraddr').setValue('192.0.2.99');
	widget(map, 'tunnel', 'isp', 'username').setValue('someone-else');
	await map.save();
	assert.equal(env.uci.get('cpe_tunnel', 'isp', 'peeraddr'), '198.51.100.1');
	assert.equal(env.uci.get('cpe_tunnel', 'isp', 'username'), 'someone-else');
	widget(map, 'tunnel', 'isp', 'mode').setValue('tsp');
	widget(map, 'tunnel', 'isp', 'server').setValue([ 'broker.example.net' ]);
	await map.save();
	assert.equal(env.uci.get('cpe_tunnel', 'isp', 'tunnelid'), '777', 'hidden but locked: kept');
	assert.equal(env.uci.get('cpe_tunnel', 'isp', 'updatekey'), null, 'hidden, not locked: dropped');
	assert.deepEqual(env.uci.get('cpe_tunnel', 'isp', 'locked'), [ 'peeraddr', 'update_url', 'tunnelid' ]);
	assert.ok(!env.record.uciChanges.some(c => c[2] === 'isp' && c[3] === 'locked'), 'the form never writes "locked"');
	assert.ok(node);
});

test('config: checks across options, as the daemon does them', async () => {
	const env = configEnv();
	const { map } = await renderConfig(env);
	const v = (type, sid, opt, value) => {
		const s = map.children.find(x => x.sectiontype === type);
		const o = s.getOption(opt);
		return o.validate(sid, value);
	};
	widget(map, 'tunnel', 'he', 'updatekey').setValue('');
	assert.match(String(v('tunnel', 'he', 'updatekey', '')), /update key \(or the account password\)/);
	widget(map, 'tunnel', 'he', 'password').setValue('example-password');
	assert.equal(v('tunnel', 'he', 'updatekey', ''), true);
	assert.match(String(v('tunnel', 'he', 'ip6gw', '2001:db8:9::1')), /not inside 2001:db8:1::2\/64/);
	assert.match(String(v('tunnel', 'he', 'ip6gw', '2001:db8:1::2')), /the same address/);
	assert.equal(v('tunnel', 'he', 'ip6gw', '2001:db8:1::1'), true);
	assert.match(String(v('tunnel', 'he', 'ip6prefix', '2001:db8:2::/96')), /must be \/64 or shorter/);
	assert.match(String(v('tunnel', 'he', 'update_retry_max', '3')), /below the first retry delay \(5 s\)/);
	assert.match(String(v('lan', 'lan1', 'ra_preferred', '8000')), /above the valid lifetime \(7200 s\)/);
	assert.match(String(v('lan', 'lan1', 'ra_lifetime', '100')), /at least the RA interval \(600 s/);
	assert.equal(v('lan', 'lan1', 'ra_lifetime', '0'), true);
});

test('config: validators give the daemon\'s verdicts on a few values', async () => {
	const env = configEnv();
	await renderConfig(env);
	const common = env.require('cpe_tunnel.common');
	const c = (t, o, v) => common.check(common.spec(t, o), v);
	assert.equal(c('tunnel', 'peeraddr', '203.0.113.1'), true);
	assert.equal(c('tunnel', 'peeraddr', '203.0.113.01'), 'expected an IPv4 address like 192.0.2.1');
	assert.equal(c('tunnel', 'ip6addr', '2001:db8:1::2/0'), 'expected an IPv6 address with prefix length like 2001:db8:1::2/64 (a /0 is not a link prefix)');
	assert.equal(c('tunnel', 'ip6prefix', '2001:db8:2::/64'), true);
	assert.equal(c('tunnel', 'mtu', '1481'), 'expected an integer from 1280 to 1480');
	assert.equal(c('lan', 'ra_mtu', '0'), true);
	assert.equal(c('lan', 'ra_mtu', '1'), 'expected 0 or an integer from 1280 to 65535');
	assert.equal(c('lan', 'ip6assign', '48'), 'expected 64 (only a /64 supports SLAAC)');
	assert.equal(c('lan', 'ip6hint', 'fffff'), 'expected a hexadecimal number from 0 to ffff');
	assert.equal(c('tunnel', 'update_url', 'https://broker.example:99999/x'),
		'expected an http:// or https:// URL like https://broker.example/nic/update (bad port)');
	assert.equal(c('tunnel', 'wan_device', 'eth0:1'), "expected an interface name (1 to 15 characters; no spaces, '/' or ':')");
});

test('config: the service section can be created when missing', async () => {
	const env = makeEnv();
	env.uci.seed('cpe_tunnel', sections({
		he: [ 'tunnel', { mode: 'static', peeraddr: '203.0.113.1', ip6addr: '2001:db8:1::2/64' } ]
	}));
	const node = await env.require('view.cpe_tunnel.config').render();
	const add = node.querySelector('#cbi-cpe_tunnel-globals').querySelectorAll('button').find(b => b.textContent === 'Add');
	assert.ok(add);
	await Promise.all(add.click());
	assert.ok(env.record.uciChanges.some(c => c[0] === 'add' && c[2] === 'globals' && c[3] === 'main'));
});

/* ------------------------------------------------------------------ protocol */

test('protocol: cpetunnel under Network > Interfaces', async () => {
	const env = makeEnv();
	env.uci.seed('network', sections({
		lan: [ 'interface', { proto: 'static' } ],
		wan: [ 'interface', { proto: 'dhcp' } ],
		wan6tun: [ 'interface', { proto: 'cpetunnel', mode: 'http-update', updatekey: 'example-update-key' } ]
	}));
	env.require('protocol.cpetunnel');
	const cls = env.record.protocols.cpetunnel;
	assert.ok(cls, 'registered');
	const p = new cls('wan6tun');
	assert.equal(p.getI18n(), 'IPv6 tunnel broker (cpe-tunnel)');
	assert.equal(p.getIfname(), 'cpe-wan6tun');
	assert.equal(new cls('averyveryverylongname').getIfname(), 'cpe-averyveryve', '15 bytes, as the handler names it');
	env.network.__ubus.wan6tun = { l3_device: 'cpe-wan6tun' };
	assert.equal(p.getIfname(), 'cpe-wan6tun');
	assert.equal(p.getOpkgPackage(), 'cpe-tunnel');
	assert.equal(p.isVirtual(), true);
	assert.equal(p.isFloating(), true);
	assert.ok(env.record.virtualPatterns.some(re => re.test('cpe-wan6tun')));

	const map = new env.form.Map('network');
	const s = map.section(env.form.NamedSection, 'wan6tun', 'interface');
	s.tab('general', 'General Settings');
	s.tab('advanced', 'Advanced Settings');
	p.renderFormOptions(s);
	const node = await map.render();
	const r = rows(node).wan6tun;
	assert.equal(r.updatekey.querySelector('input').getAttribute('type'), 'password');
	const links = r.tunlink.querySelectorAll('option').map(o => o.getAttribute('value'));
	assert.deepEqual(links, [ '', 'lan', 'wan' ], 'the interface itself is not offered');
	assert.equal(r.peeraddr.classList.contains('hidden'), false);
	assert.equal(r.server.classList.contains('hidden'), true);
	assert.equal(s.getOption('locked'), null);
	assert.equal(s.getOption('ifname'), null);
	assert.equal(s.getOption('enabled'), null);
});

/* ------------------------------------------------------------------ one form builder */

function protocolForm(env, sid) {
	env.require('protocol.cpetunnel');
	const p = new env.record.protocols.cpetunnel(sid);
	const map = new env.form.Map('network');
	const s = map.section(env.form.NamedSection, sid, 'interface');
	s.tab('general', 'General Settings');
	s.tab('advanced', 'Advanced Settings');
	p.renderFormOptions(s);
	return { map: map, s: s };
}

test('forms: both forms build their fields from the same rows', async () => {
	const env = configEnv();
	env.uci.seed('network', sections({ wan6: [ 'interface', { proto: 'cpetunnel', mode: 'http-update' } ] }));
	const { map } = await renderConfig(env);
	const cfg = map.children.find(x => x.sectiontype === 'tunnel');
	const { s } = protocolForm(env, 'wan6');
	const common = env.require('cpe_tunnel.common');
	let shared = 0;
	for (const name of common.NETIFD.tunnel) {
		const a = cfg.getOption(name), b = s.getOption(name);
		assert.ok(a && b, name);
		assert.equal(b.title, a.title, name);
		assert.equal(b.__name__, a.__name__, name);
		assert.deepEqual(b.keylist, a.keylist, name);
		assert.deepEqual(b.vallist, a.vallist, name);
		assert.deepEqual(b.deps, a.deps, name);
		if ([ 'ipaddr', 'ip6prefix' ].indexOf(name) < 0)
			assert.equal(b.description, a.description, name);
		shared++;
	}
	assert.ok(shared > 20);
	/* the netifd words: an interface's WAN, odhcpd */
	assert.match(s.getOption('ip6prefix').description, /odhcpd/);
	assert.equal(s.getOption('ipaddr').tab, 'general');
	assert.equal(cfg.getOption('ipaddr').tab, 'advanced');
	/* the broker tab of the configuration page is the advanced tab of an interface */
	assert.equal(cfg.getOption('update_url').tab, 'broker');
	assert.equal(s.getOption('update_url').tab, 'advanced');
	assert.equal(s.getOption('log_level').tab, 'advanced');
});

test('forms: an option new in the schema gets a field before it has words', async () => {
	const env = configEnv();
	const common = env.require('cpe_tunnel.common');
	/* as `python3 -m cpe_tunnel.luci_schema --write` would add it */
	common.OPTIONS.tunnel.push({ name: 'probe_interval', kind: 'int', def: '7', lo: 2, hi: 9, modes: [ 'tsp' ] });
	common.NETIFD.tunnel.push('probe_interval');
	const { map } = await renderConfig(env);
	const o = map.children.find(x => x.sectiontype === 'tunnel').getOption('probe_interval');
	assert.ok(o, 'in the configuration form');
	assert.equal(o.title, 'probe_interval');
	assert.equal(o.tab, 'advanced');
	assert.equal(o.placeholder, '7');
	assert.deepEqual(o.deps, [ { mode: 'tsp' } ]);
	assert.equal(o.cpeLockable, true);
	assert.equal(o.validate('he', '10'), 'expected an integer from 2 to 9');
	assert.equal(o.validate('he', '9'), true);
	const { s } = protocolForm(env, 'wan6');
	assert.equal(s.getOption('probe_interval').tab, 'advanced', 'and in the interface form');
	/* options the netifd handler does not take stay out of the interface form */
	common.OPTIONS.tunnel.push({ name: 'local_only', kind: 'bool', def: '0' });
	const p2 = protocolForm(env, 'wan7');
	assert.equal(p2.s.getOption('local_only'), null);
});
