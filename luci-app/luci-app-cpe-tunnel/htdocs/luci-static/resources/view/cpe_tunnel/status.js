'use strict';
'require view';
'require rpc';
'require poll';
'require dom';
'require ui';

/*
 * Network > IPv6 Tunnel > Status: what `cpe-tunnel status` tells, polled from
 * the daemon's ubus object every POLL_INTERVAL seconds, and a Reconnect button.
 *
 * A reply of `ubus call cpe_tunnel status` (the daemon leaves out fields whose
 * value is unknown; times are the router's clock, seconds since 1970):
 *
 * {
 *	"broker": { "ipv4": "203.0.113.18", "update_url": "http://203.0.113.18/nic/update" },
 *	"counters": {
 *		"drops": {}, "last_rx": 1795389930.31, "last_tx": 1795389931.06,
 *		"rx_bytes": 68, "rx_dropped": 0, "rx_packets": 1, "tx_bytes": 448, "tx_packets": 6
 *	},
 *	"dataplane": "userspace",
 *	"delegated_prefixes": [ "2001:db8:1234::/48" ],
 *	"ifname": "cpe6in4",
 *	"keepalive": {
 *		"alive": true, "answered": 1, "enabled": true, "interval": 5,
 *		"last_reply_age": 3.0, "missed_in_a_row": 0, "rtt_ms": 1.46, "sent": 1
 *	},
 *	"lans": [ {
 *		"address": "2001:db8:1234::1", "deprecated": [], "interface": "br-lan",
 *		"prefix": "2001:db8:1234::/64", "ra": true, "ra_interval": 10
 *	} ],
 *	"last_update": {
 *		"message": "the broker now has 203.0.113.2 as the tunnel endpoint",
 *		"requests_sent": 1, "result": "ok", "state": "ok", "time": 1795389930.31
 *	},
 *	"mode": "http-update",
 *	"mtu": 1280,
 *	"reason": "tunnel up",
 *	"since": 1795389930.31,
 *	"state": "up",
 *	"tunnel": "he",
 *	"tunnel_addresses": { "local": "2001:db8:1::2/64", "remote": "2001:db8:1::1" },
 *	"wan": { "device": "wan0", "local_ipv4": "198.51.100.2", "nat_detected": true, "public_ipv4": "203.0.113.2" }
 * }
 *
 * "now" is the router's clock at the reply; the keepalive also has
 * "answer_timeout" (s), shown when echoes go unanswered.
 *
 * Mode tsp adds "tsp": { tunnel_type, requested, transport, sessions, fallback,
 * keepalive_address }. TSP v4v6 (IPv4 in IPv6, IPv6-only WAN) also has
 * "tunnel_family": "ipv4", "wan": { local_ipv6, public_ipv6 }, "broker": { ipv6 },
 * "tunnel_addresses": { family: "ipv4", local, remote, local_endpoint,
 * remote_endpoint }, "delegated_prefixes4" and "lan4": { interface, address }.
 * Mode tic adds "sixxs": { tunnel_id, type, pop, config_from ("TIC" or "cache"),
 * tic_error, waiting_for_clock, clock_watch, next_tic_in, control_rx: { opcode
 * name: count }, motd: { text, time, last }, heartbeat: { interval, sent,
 * last_sent_age, paused, ... } }. The MOTD is text from the network: it is
 * only ever put into a text node. "last_error" and "config_error" are plain
 * sentences when set. (Real replies: tests/luci/samples/.)
 */

var POLL_INTERVAL = 5;

var callStatus = rpc.declare({
	object: 'cpe_tunnel',
	method: 'status',
	expect: { '': {} }
});

var callReconnect = rpc.declare({
	object: 'cpe_tunnel',
	method: 'reconnect',
	expect: { '': {} }
});

/* { status: {...} } or { error: 'why there is none' } */
function fetchStatus() {
	return callStatus().then(function(st) {
		if (!L.isObject(st) || typeof(st.state) != 'string')
			return { error: _('The daemon gave no status.') };
		return { status: st };
	}, function(err) {
		return { error: String((err && err.message) || err) };
	});
}

function now(st) {
	/* a reply may carry the router's own clock; else the browser's */
	return (typeof(st.now) == 'number') ? st.now : Date.now() / 1000;
}

function fmtAge(seconds) {
	if (seconds == null || isNaN(seconds))
		return _('unknown');
	seconds = Math.max(0, Math.floor(seconds));
	if (seconds < 120)
		return _('%d s').format(seconds);
	if (seconds < 7200)
		return _('%d min').format(Math.floor(seconds / 60));
	if (seconds < 172800)
		return _('%d h %d min').format(Math.floor(seconds / 3600), Math.floor(seconds % 3600 / 60));
	return _('%d days').format(Math.floor(seconds / 86400));
}

function fmtBytes(n) {
	var units = [ _('KiB'), _('MiB'), _('GiB'), _('TiB') ], i = -1;
	n = +n || 0;
	if (n < 1024)
		return _('%d B').format(n);
	while (n >= 1024 && i < units.length - 1) {
		n /= 1024;
		i++;
	}
	return '%.1f %s'.format(n, units[i]);
}

function fmtTime(epoch) {
	var d = new Date(epoch * 1000);
	var pad = function(x) { return (x < 10 ? '0' : '') + x };
	return '%d-%s-%s %s:%s:%s'.format(d.getFullYear(), pad(d.getMonth() + 1), pad(d.getDate()),
		pad(d.getHours()), pad(d.getMinutes()), pad(d.getSeconds()));
}

function stateWord(state) {
	switch (state) {
	case 'up': return _('Connected');
	case 'down': return _('Not connected');
	case 'starting': return _('Connecting');
	default: return state;
	}
}

function modeWord(mode) {
	switch (mode) {
	case 'http-update': return _('6in4 with HTTP endpoint update');
	case 'static': return _('6in4 with fixed endpoints');
	case 'tsp': return _('TSP broker');
	case 'tic': return _('SixXS-style TIC');
	default: return mode || _('unknown');
	}
}

function dataplaneWord(dp) {
	switch (dp) {
	case 'kernel': return _('kernel');
	case 'userspace': return _('userspace');
	case null: case undefined: return _('none yet');
	default: return dp;
	}
}

function none() {
	return E('em', {}, [ _('none') ]);
}

/* {reason: count} as one line each, sorted; null when empty */
function counts(obj) {
	var keys = L.isObject(obj) ? Object.keys(obj).sort() : [];
	if (!keys.length)
		return null;
	return keys.map(function(key) {
		return E('div', {}, [ _('%s: %d').format(key, obj[key]) ]);
	});
}

function tspTypeWord(type) {
	switch (type) {
	case 'v6v4': return _('IPv6 in IPv4 (v6v4)');
	case 'v6udpv4': return _('IPv6 in UDP over IPv4 (v6udpv4)');
	case 'v6anyv4': return _('IPv6 in IPv4, or in UDP behind a NAT (v6anyv4)');
	case 'v4v6': return _('IPv4 in IPv6 (v4v6)');
	default: return type;
	}
}

/* rows of mode tsp: { tunnel_type, requested, transport, sessions, fallback, keepalive_address } */
function tspRows(tsp) {
	var rows = [], what;
	if (tsp.tunnel_type)
		what = (tsp.requested && tsp.requested != tsp.tunnel_type)
			? _('%s, asked for %s').format(tspTypeWord(tsp.tunnel_type), tspTypeWord(tsp.requested))
			: tspTypeWord(tsp.tunnel_type);
	else
		what = _('no tunnel yet, asking for %s').format(tsp.requested ? tspTypeWord(tsp.requested) : '?');
	if (tsp.sessions)
		what = _('%s; session %d over %s').format(what, tsp.sessions, String(tsp.transport || '?').toUpperCase());
	rows.push([ _('TSP tunnel'), what ]);
	rows.push([ _('TSP fallback'), tsp.fallback || null ]);
	rows.push([ _('Keepalive target'), tsp.keepalive_address || null ]);
	return rows;
}

function ticSourceWord(src) {
	switch (src) {
	case 'TIC': return _('the TIC server');
	case 'cache': return _('the copy saved from the last TIC session (TIC server not reachable)');
	default: return src || '?';
	}
}

/* rows of mode tic: { tunnel_id, type, pop, config_from, tic_error, waiting_for_clock,
 * clock_watch, next_tic_in, control_rx, motd: { text, time, last }, heartbeat } */
function sixxsRows(sx, t) {
	var rows = [];

	rows.push([ _('SixXS tunnel'), sx.tunnel_id
		? _('%s (%s) at PoP %s, configuration from %s').format(
			sx.tunnel_id, sx.type || '?', sx.pop || '?', ticSourceWord(sx.config_from))
		: _('not fetched yet') ]);

	if (sx.waiting_for_clock) {
		var wait = sx.clock_watch ? _('waiting for the router\'s clock to be set (watching for it)')
			: _('waiting for the router\'s clock to be set');
		rows.push([ _('Clock'), (sx.next_tic_in != null)
			? _('%s, then asking the TIC server again, at the latest in %s').format(wait, fmtAge(sx.next_tic_in))
			: _('%s, then asking the TIC server again').format(wait) ]);
	}
	else if (sx.next_tic_in != null) {
		rows.push([ _('Next TIC request'), _('in %s').format(fmtAge(sx.next_tic_in)) ]);
	}

	var hb = sx.heartbeat;
	if (hb) {
		var beat = _('every %d s, %d sent').format(hb.interval || 0, hb.sent || 0);
		if (hb.last_sent_age != null)
			beat = _('%s, the last %s ago').format(beat, fmtAge(hb.last_sent_age));
		if (hb.paused)
			beat = _('paused: no IPv4 address on the WAN (%s)').format(beat);
		rows.push([ _('Heartbeat'), beat ]);
	}

	/* the PoP's message of the day comes from the network: text, never markup */
	var motd = sx.motd;
	if (L.isObject(motd) && motd.text != null && motd.text !== '') {
		var parts = [ E('span', { 'class': 'cpe-tunnel-motd' }, [ String(motd.text) ]) ];
		if (motd.time != null)
			parts.push(E('small', {}, [ ' ', (motd.last != null && motd.last - motd.time >= 1)
				? _('(received %s ago, again %s ago)').format(fmtAge(t - motd.time), fmtAge(t - motd.last))
				: _('(received %s ago)').format(fmtAge(t - motd.time)) ]));
		rows.push([ _('PoP message'), parts ]);
	}

	rows.push([ _('Messages from the PoP'), counts(sx.control_rx) ]);

	if (sx.tic_error)
		rows.push([ _('TIC error'), sx.tic_error ]);

	return rows;
}

return view.extend({
	load: function() {
		return fetchStatus();
	},

	/* [label, value] rows for one status reply; a null value hides the row.
	 * A value is a string (data from the reply ends up as a text node), one
	 * element or an array of elements. */
	statusRows: function(st) {
		var t = now(st),
		    v4v6 = (st.tunnel_family == 'ipv4'),  /* TSP v4v6: IPv4 in IPv6, the WAN is IPv6 */
		    wan = st.wan || {},
		    broker = st.broker || {},
		    ta = st.tunnel_addresses || {},
		    c = st.counters,
		    k = st.keepalive || {},
		    u = st.last_update,
		    rows = [];

		if (st.since != null)
			rows.push([ (st.state == 'up') ? _('Up for') : _('Since'),
				_('%s (since %s)').format(fmtAge(t - st.since), fmtTime(st.since)) ]);

		rows.push([ _('Tunnel'), _('%s: %s, %s data plane, device %s').format(
			st.tunnel || '?', modeWord(st.mode), dataplaneWord(st.dataplane), st.ifname || '?') ]);

		if (v4v6)
			rows.push([ _('WAN'), wan.local_ipv6
				? _('%s on %s').format(wan.local_ipv6, wan.device || '?')
				: _('no IPv6 address (%s)').format(wan.device || _('no default route')) ]);
		else
			rows.push([ _('WAN'), wan.local_ipv4
				? _('%s on %s').format(wan.local_ipv4, wan.device || '?')
				: _('no IPv4 address (%s)').format(wan.device || _('no default route')) ]);

		if (!v4v6)  /* NAT is an IPv4 matter */
			rows.push([ _('NAT'), wan.nat_detected ? _('yes: this router is behind a NAT') : _('not seen') ]);
		rows.push([ _('Public IPv4'), wan.public_ipv4 || null ]);
		rows.push([ _('Public IPv6'), wan.public_ipv6 || null ]);

		var brokerAddrs = [ broker.ipv4, broker.ipv6, broker.server ].filter(function(x) { return x });
		rows.push([ _('Broker'), brokerAddrs.length ? brokerAddrs.join(', ') : null ]);
		rows.push([ _('Update URL'), broker.update_url || null ]);

		rows.push([ (ta.family == 'ipv4') ? _('Tunnel IPv4') : _('Tunnel IPv6'), ta.local
			? _('%s, broker side %s').format(ta.local, ta.remote || '?') : null ]);
		if (ta.local_endpoint || ta.remote_endpoint)
			rows.push([ _('Tunnel endpoints'), _('%s on this router, %s at the broker').format(
				ta.local_endpoint || '?', ta.remote_endpoint || '?') ]);

		var delegated = (st.delegated_prefixes || []).concat(st.delegated_prefixes4 || []);
		rows.push([ _('Delegated prefix'), delegated.length ? delegated.join(', ') : none() ]);

		if (v4v6 || st.lan4)
			rows.push([ _('LAN IPv4'), (st.lan4 && st.lan4.address)
				? _('%s on %s').format(st.lan4.address, st.lan4.interface || '?') : none() ]);

		var lans = (st.lans || []).map(function(lan) {
			var parts = [ _('%s on %s').format(lan.prefix || _('no prefix'), lan.interface || '?') ];
			if (lan.ra)
				parts.push(_('Router Advertisements about every %d s').format(lan.ra_interval || 0));
			if (lan.deprecated && lan.deprecated.length)
				parts.push(_('deprecating %s').format(lan.deprecated.map(function(d) { return d.prefix || '?' }).join(', ')));
			return E('div', {}, [ parts.join('; ') ]);
		});
		/* v4v6 gives the LANs IPv4 only: no /64 to miss */
		if (!v4v6 || (st.lans || []).some(function(lan) { return lan.prefix }))
			rows.push([ _('LAN /64s'), lans.length ? lans : none() ]);

		if (c) {
			rows.push([ _('Traffic'), _('sent %s, received %s').format(
				N_(c.tx_packets || 0, '%d packet (%s)', '%d packets (%s)').format(c.tx_packets || 0, fmtBytes(c.tx_bytes)),
				N_(c.rx_packets || 0, '%d packet (%s)', '%d packets (%s)').format(c.rx_packets || 0, fmtBytes(c.rx_bytes))) ]);
			if (c.last_rx != null || c.last_tx != null)
				rows.push([ _('Last packet'), _('sent %s, received %s').format(
					c.last_tx != null ? _('%s ago').format(fmtAge(t - c.last_tx)) : _('never'),
					c.last_rx != null ? _('%s ago').format(fmtAge(t - c.last_rx)) : _('never')) ]);
			rows.push([ _('Dropped packets'), counts(c.drops) || none() ]);
		}

		if (k.enabled) {
			var word = (k.alive === true) ? _('the broker answers')
				: (k.alive === false) ? _('the broker does NOT answer') : _('not probed yet');
			var ka = (k.rtt_ms != null)
				? _('%s; every %d s when idle; round trip %.1f ms').format(word, k.interval || 0, k.rtt_ms)
				: _('%s; every %d s when idle').format(word, k.interval || 0);
			/* the answer timeout says how soon a dead broker is noticed: told when echoes go unanswered */
			if (k.missed_in_a_row > 0 && k.answer_timeout != null)
				ka = _('%s; %s').format(ka, N_(k.missed_in_a_row,
					'%d echo in a row not answered within %.1f s', '%d echoes in a row not answered within %.1f s')
					.format(k.missed_in_a_row, k.answer_timeout));
			rows.push([ _('Keepalive'), ka ]);
		}

		if (u) {
			var when = (u.time != null) ? _('%s ago').format(fmtAge(t - u.time)) : _('not yet');
			rows.push([ _('Last broker update'), _('%s: %s (%s)').format(u.result || u.state || '?', u.message || '', when) ]);
			if (u.next_retry_in != null)
				rows.push([ _('Next retry'), _('in %s').format(fmtAge(u.next_retry_in)) ]);
		}

		if (st.tsp)
			rows = rows.concat(tspRows(st.tsp));

		if (st.sixxs)
			rows = rows.concat(sixxsRows(st.sixxs, t));

		rows.push([ _('Last error'), st.last_error ? E('span', { 'class': 'cpe-tunnel-error' }, [ st.last_error ]) : none() ]);
		if (st.config_error)
			rows.push([ _('Configuration problem'), E('span', { 'class': 'cpe-tunnel-error' }, [ st.config_error ]) ]);

		return rows.filter(function(r) { return r[1] != null && r[1] !== '' });
	},

	renderStatus: function(res) {
		if (!res || !res.status)
			return E('div', { 'class': 'alert-message warning cpe-tunnel-unreachable' }, [
				E('h4', {}, [ _('The cpe-tunnel daemon does not answer') ]),
				E('p', {}, [ _('Is the service running? Switch it on under Configuration (Run the service), or check the system log.') ]),
				E('p', {}, [ E('small', {}, [ res && res.error ? res.error : '' ]) ])
			]);

		var st = res.status;
		var banner = E('div', { 'class': 'cpe-tunnel-banner cpe-tunnel-' + st.state }, [
			E('strong', {}, [ stateWord(st.state) ]),
			st.reason ? ' \u2014 ' + st.reason : ''
		]);

		/* LuCI's E() makes text nodes of the strings in a children array (a bare
		 * string child would be parsed as HTML, a nested array shown as text):
		 * always pass a flat array */
		var table = E('table', { 'class': 'table cpe-tunnel-status' },
			this.statusRows(st).map(function(r) {
				return E('tr', { 'class': 'tr' }, [
					E('td', { 'class': 'td left', 'width': '25%' }, [ r[0] ]),
					E('td', { 'class': 'td left' }, Array.isArray(r[1]) ? r[1] : [ r[1] ])
				]);
			}));

		return E([], [ banner, table ]);
	},

	handleReconnect: function(container, ev) {
		return callReconnect().then(L.bind(function(reply) {
			ui.addNotification(null, E('p', {}, [
				_('Reconnecting: the daemon updates the broker now (%s).').format(reply && reply.message ? reply.message : _('no answer'))
			]), 'info');
			return fetchStatus().then(L.bind(this.update, this, container));
		}, this), function(err) {
			ui.addNotification(null, E('p', {}, [
				_('Reconnect failed: %s').format(String((err && err.message) || err))
			]), 'danger');
		});
	},

	update: function(container, res) {
		dom.content(container, this.renderStatus(res));
	},

	render: function(res) {
		var container = E('div', { 'class': 'cbi-section cpe-tunnel-container' });

		this.update(container, res);

		poll.add(L.bind(function() {
			return fetchStatus().then(L.bind(this.update, this, container));
		}, this), POLL_INTERVAL);

		return E([], [
			E('h2', {}, [ _('IPv6 tunnel') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('The state of the tunnel to your IPv6 tunnel broker, updated every %d seconds.').format(POLL_INTERVAL)
			]),
			container,
			E('div', { 'class': 'cbi-page-actions' }, [
				E('button', {
					'class': 'btn cbi-button cbi-button-action',
					'click': ui.createHandlerFn(this, 'handleReconnect', container)
				}, [ _('Reconnect') ])
			])
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
