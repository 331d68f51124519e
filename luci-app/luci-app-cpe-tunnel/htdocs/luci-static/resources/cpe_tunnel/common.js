'use strict';
'require baseclass';
'require form';
'require uci';

/*
 * Shared by view/cpe_tunnel/config.js and protocol/cpetunnel.js ('require
 * cpe_tunnel.common as common').
 *
 * OPTIONS is the option table of /etc/config/cpe_tunnel, a copy of the daemon's
 * schema (cpe_tunnel/core/schema.py): kind, range, choices, default, the modes
 * that use an option and the modes that require it. tests/unit/test_luci.py fails
 * when the two differ.
 *
 * check(opt, text) gives the same verdict and the same message as the daemon's
 * own check of one value (schema.check_value, which `cpe-tunnel --check` uses):
 * true, or the message. The test feeds both generated and hand-picked values to
 * both and compares.
 */

var HTTP = [ 'http-update' ],
    SIXIN4 = [ 'http-update', 'static' ],
    TSP = [ 'tsp' ],
    TIC = [ 'tic' ];

var MODES = [ 'http-update', 'static', 'tsp', 'tic' ];

/* name, kind, def(ault), lo/hi (int, hex), zero (0 allowed besides lo..hi),
 * choices (enum), modes (null: every mode), req (true or the modes that require
 * it), secret, list, ex(ample of the format, the placeholder of a required field
 * or of a list's input) */
var OPTIONS = {
	globals: [
		{ name: 'enabled', kind: 'bool', def: '1' },
		{ name: 'log_level', kind: 'enum', def: 'info', choices: [ 'debug', 'info', 'notice', 'warning', 'error' ] },
		{ name: 'control_socket', kind: 'path', def: '/var/run/cpe_tunnel.sock' },
		{ name: 'state_dir', kind: 'path', def: '/var/run/cpe_tunnel' }
	],
	tunnel: [
		{ name: 'enabled', kind: 'bool', def: '1' },
		{ name: 'mode', kind: 'enum', choices: MODES, req: true },
		{ name: 'wan_device', kind: 'ifname' },
		{ name: 'ipaddr', kind: 'ipv4' },
		{ name: 'peeraddr', kind: 'ipv4', modes: SIXIN4, req: SIXIN4, ex: '203.0.113.1' },
		{ name: 'ip6addr', kind: 'ip6addr', modes: SIXIN4, req: SIXIN4, ex: '2001:db8:1::2/64' },
		{ name: 'ip6gw', kind: 'ipv6' },
		{ name: 'ip6prefix', kind: 'prefix6', list: true, ex: '2001:db8:2::/64' },
		{ name: 'ifname', kind: 'ifname', def: 'cpe6in4' },
		{ name: 'dataplane', kind: 'enum', def: 'auto', choices: [ 'auto', 'kernel', 'userspace' ] },
		{ name: 'mtu', kind: 'int', def: '1280', lo: 1280, hi: 1480 },
		{ name: 'ttl', kind: 'int', def: '64', lo: 1, hi: 255 },
		{ name: 'tos', kind: 'int', def: '0', lo: 0, hi: 255 },
		{ name: 'defaultroute', kind: 'bool', def: '1' },
		{ name: 'keepalive_interval', kind: 'int', def: '30', lo: 0, hi: 3600 },
		{ name: 'update_url', kind: 'url', def: 'https://ipv4.tunnelbroker.net/nic/update', modes: HTTP },
		{ name: 'username', kind: 'string', modes: HTTP.concat(TSP, TIC), req: HTTP.concat(TIC), ex: 'example-user' },
		{ name: 'updatekey', kind: 'string', modes: HTTP, secret: true },
		{ name: 'password', kind: 'string', modes: HTTP.concat(TSP, TIC), req: TIC, secret: true },
		{ name: 'tunnelid', kind: 'string', modes: HTTP.concat(TIC), req: HTTP, ex: '123456' },
		{ name: 'tls_verify', kind: 'bool', def: '1', modes: HTTP.concat(TIC) },
		{ name: 'ca_file', kind: 'path', modes: HTTP.concat(TIC) },
		{ name: 'send_myip', kind: 'enum', def: 'auto', choices: [ 'auto', 'always', 'never' ], modes: HTTP },
		{ name: 'private_range', kind: 'prefix4', list: true, ex: '198.51.100.0/24' },
		{ name: 'update_retry_min', kind: 'int', def: '5', lo: 1, hi: 3600, modes: HTTP },
		{ name: 'update_retry_max', kind: 'int', def: '900', lo: 1, hi: 86400, modes: HTTP },
		{ name: 'server', kind: 'string', list: true, modes: TSP.concat(TIC), req: TSP.concat(TIC), ex: 'broker.example.net' },
		{ name: 'tic_tls', kind: 'enum', def: 'try', choices: [ 'try', 'require', 'never' ], modes: TIC },
		{ name: 'auth', kind: 'enum', def: 'any', choices: [ 'any', 'anonymous', 'plain', 'digest-md5' ], modes: TSP },
		{ name: 'tunnel_mode', kind: 'enum', def: 'v6anyv4', choices: [ 'v6anyv4', 'v6v4', 'v6udpv4' ], modes: TSP },
		{ name: 'host_type', kind: 'enum', def: 'router', choices: [ 'router', 'host' ], modes: TSP },
		{ name: 'prefix_len', kind: 'int', def: '0', lo: 0, hi: 64, modes: TSP },
		{ name: 'tsp_transport', kind: 'enum', def: 'auto', choices: [ 'auto', 'udp', 'tcp' ], modes: TSP },
		{ name: 'locked', kind: 'string', list: true }
	],
	lan: [
		{ name: 'enabled', kind: 'bool', def: '1' },
		{ name: 'interface', kind: 'ifname', req: true, ex: 'br-lan' },
		{ name: 'ip6assign', kind: 'int', def: '64', lo: 64, hi: 64, why: 'slaac' },
		{ name: 'ip6hint', kind: 'hex', lo: 0, hi: 0xffff },
		{ name: 'ra', kind: 'bool', def: '1' },
		{ name: 'ra_interval', kind: 'int', def: '600', lo: 4, hi: 1800 },
		{ name: 'ra_lifetime', kind: 'int', def: '1800', lo: 0, hi: 9000 },
		{ name: 'ra_mtu', kind: 'int', def: '0', lo: 1280, hi: 65535, zero: true },
		{ name: 'ra_preferred', kind: 'int', def: '3600', lo: 0, hi: 4294967295 },
		{ name: 'ra_valid', kind: 'int', def: '7200', lo: 0, hi: 4294967295 },
		{ name: 'dns', kind: 'ipv6', list: true, ex: '2001:db8::53' }
	]
};

function spec(section_type, name) {
	var list = OPTIONS[section_type] || [];
	for (var i = 0; i < list.length; i++)
		if (list[i].name == name)
			return list[i];
	return null;
}

/* ---------------------------------------------------------------- value checks
 * Ported from cpe_tunnel/core/addr.py and schema.py, message for message. A check
 * throws Bad(detail) (detail: null or the explanation the daemon adds) or returns
 * the typed value. Lengths count code points, as Python does. */

function Bad(detail) {
	this.detail = (detail != null) ? detail : null;
}

var DEC = '0123456789',
    HEX = '0123456789abcdefABCDEF',
    HOSTCH = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-';

/* str.isspace() of CPython beyond what isControl() already covers */
var PYSPACE = /[\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

function cplen(s) {
	return Array.from(s).length;
}

function allIn(s, chars) {
	for (var i = 0; i < s.length; i++)
		if (chars.indexOf(s.charAt(i)) < 0)
			return false;
	return true;
}

function isControl(c) {
	var o = c.charCodeAt(0);
	return o < 32 || o == 127;
}

function hasControl(s) {
	for (var i = 0; i < s.length; i++)
		if (isControl(s.charAt(i)))
			return true;
	return false;
}

function asciiOnly(s) {
	for (var i = 0; i < s.length; i++) {
		var o = s.charCodeAt(i);
		if (!(o > 32 && o < 127))
			throw new Bad(null);
	}
}

/* UTF-8 length; null when the text holds a lone surrogate (Python cannot encode it) */
function utf8len(s) {
	var n = 0;
	for (var i = 0; i < s.length; i++) {
		var c = s.charCodeAt(i);
		if (c < 0x80)
			n += 1;
		else if (c < 0x800)
			n += 2;
		else if (c >= 0xd800 && c <= 0xdbff) {
			var d = s.charCodeAt(i + 1);
			if (!(d >= 0xdc00 && d <= 0xdfff))
				return null;
			n += 4;
			i++;
		}
		else if (c >= 0xdc00 && c <= 0xdfff)
			return null;
		else
			n += 3;
	}
	return n;
}

/* Python's int() on ASCII text without spaces: sign, digits, single underscores */
function pyInt(s) {
	if (!/^[+-]?[0-9]+(_[0-9]+)*$/.test(s))
		return null;
	return parseInt(s.replace(/_/g, ''), 10);
}

function AddrError(msg) {
	this.message = msg;
}

function ip4Aton(text) {
	var parts = text.split('.'),
	    out = [];
	if (parts.length != 4)
		throw new AddrError(_("'%s' is not an IPv4 address (expected four numbers like 192.0.2.1)").format(text));
	for (var i = 0; i < 4; i++) {
		var p = parts[i];
		if (!p || p.length > 3 || !/^[0-9]+$/.test(p))
			throw new AddrError(_("'%s' is not an IPv4 address (expected four numbers like 192.0.2.1)").format(text));
		if (p.length > 1 && p.charAt(0) == '0')
			throw new AddrError(_("'%s' is not an IPv4 address (leading zeros are ambiguous)").format(text));
		var v = parseInt(p, 10);
		if (v > 255)
			throw new AddrError(_("'%s' is not an IPv4 address (%d is above 255)").format(text, v));
		out.push(v);
	}
	return out;
}

function ip4Ntoa(b) {
	return b.join('.');
}

function hex16(s, text) {
	if (!s || s.length > 4 || !allIn(s, HEX))
		throw new AddrError(_("'%s' is not an IPv6 address").format(text));
	return parseInt(s, 16);
}

function ip6Aton(text) {
	if (text.indexOf('%') >= 0)
		throw new AddrError(_("'%s': a zone index (%%) is not allowed here").format(text));
	if (text.length > 45 || text.split('::').length > 2 || text.indexOf(':::') >= 0)
		throw new AddrError(_("'%s' is not an IPv6 address").format(text));
	var tail4 = null, s = text, groups = [], i;
	var last = s.lastIndexOf(':');
	if (last >= 0 && s.substring(last + 1).indexOf('.') >= 0) {
		tail4 = ip4Aton(s.substring(last + 1));
		s = s.substring(0, last + 1) + '0:0';
	}
	if (s.indexOf('::') >= 0) {
		var halves = s.split('::'),
		    lparts = halves[0] ? halves[0].split(':') : [],
		    rparts = halves[1] ? halves[1].split(':') : [];
		if (lparts.length + rparts.length > 7)
			throw new AddrError(_("'%s' is not an IPv6 address (too many groups)").format(text));
		for (i = 0; i < lparts.length; i++)
			groups.push(hex16(lparts[i], text));
		for (i = lparts.length + rparts.length; i < 8; i++)
			groups.push(0);
		for (i = 0; i < rparts.length; i++)
			groups.push(hex16(rparts[i], text));
	}
	else {
		var parts = s.split(':');
		if (parts.length != 8)
			throw new AddrError(_("'%s' is not an IPv6 address (expected 8 groups or ::)").format(text));
		for (i = 0; i < 8; i++)
			groups.push(hex16(parts[i], text));
	}
	var b = [];
	for (i = 0; i < 8; i++)
		b.push(groups[i] >> 8, groups[i] & 0xff);
	if (tail4)
		b = b.slice(0, 12).concat(tail4);
	return b;
}

/* RFC 5952 text */
function ip6Ntoa(b) {
	var g = [], i, j, best = -1, bestLen = 0;
	for (i = 0; i < 8; i++)
		g.push(b[2 * i] * 256 + b[2 * i + 1]);
	i = 0;
	while (i < 8) {
		if (g[i] == 0) {
			j = i;
			while (j < 8 && g[j] == 0)
				j++;
			if (j - i > bestLen && j - i >= 2) {
				best = i;
				bestLen = j - i;
			}
			i = j;
		}
		else {
			i++;
		}
	}
	var hex = function(x) { return x.toString(16) };
	if (best < 0)
		return g.map(hex).join(':');
	return g.slice(0, best).map(hex).join(':') + '::' + g.slice(best + bestLen).map(hex).join(':');
}

function splitPlen(text, maxlen) {
	var slash = text.indexOf('/');
	if (slash < 0)
		return [ text, null ];
	var a = text.substring(0, slash), p = text.substring(slash + 1);
	if (!/^[0-9]+$/.test(p) || p.length > 3 || parseInt(p, 10) > maxlen)
		throw new AddrError(_("'%s': prefix length must be a number from 0 to %d").format(text, maxlen));
	return [ a, parseInt(p, 10) ];
}

function parseAddr6Plen(text) {
	var ap = splitPlen(text, 128);
	if (ap[1] == null)
		throw new AddrError(_("'%s' needs a prefix length (like 2001:db8::2/64)").format(text));
	return [ ip6Aton(ap[0]), ap[1] ];
}

function maskBytes(b, plen) {
	var out = b.slice();
	for (var i = 0; i < out.length; i++) {
		var bits = plen - 8 * i;
		if (bits >= 8)
			continue;
		out[i] = (bits <= 0) ? 0 : (out[i] & ((0xff << (8 - bits)) & 0xff));
	}
	return out;
}

function sameBytes(a, b) {
	if (a.length != b.length)
		return false;
	for (var i = 0; i < a.length; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

function parsePrefix6(text) {
	var bp = parseAddr6Plen(text);
	if (!sameBytes(maskBytes(bp[0], bp[1]), bp[0]))
		throw new AddrError('host bits');
	return bp;
}

function parsePrefix4(text) {
	var ap = splitPlen(text, 32),
	    plen = (ap[1] == null) ? 32 : ap[1],
	    b = ip4Aton(ap[0]);
	if (!sameBytes(maskBytes(b, plen), b))
		throw new AddrError('host bits');
	return [ b, plen ];
}

function isIp4(text) {
	try { ip4Aton(text); return true; } catch (e) { return false; }
}

function isIp6(text) {
	try { ip6Aton(text); return true; } catch (e) { return false; }
}

function wrapAddr(fn) {
	/* an addr.py ValueError escaping a check: its message becomes the detail */
	try {
		return fn();
	}
	catch (e) {
		if (e instanceof AddrError)
			throw new Bad(e.message);
		throw e;
	}
}

function checkHost(host) {
	if (host.charAt(0) == '[') {
		if (host.charAt(host.length - 1) != ']' || !isIp6(host.substring(1, host.length - 1)))
			throw new Bad(_('bad IPv6 address in brackets'));
		return;
	}
	if (!host || cplen(host) > 253)
		throw new Bad(_('the host name is missing or too long'));
	var labels = host.split('.');
	for (var i = 0; i < labels.length; i++) {
		var l = labels[i];
		if (!l || l.length > 63 || !allIn(l, HOSTCH) || l.charAt(0) == '-' || l.charAt(l.length - 1) == '-')
			throw new Bad(_('bad host name'));
	}
}

var CHECK = {
	bool: function(opt, text) {
		var t = text.toLowerCase();
		if ([ '1', 'yes', 'on', 'true', 'enabled' ].indexOf(t) >= 0)
			return true;
		if ([ '0', 'no', 'off', 'false', 'disabled' ].indexOf(t) >= 0)
			return false;
		throw new Bad(null);
	},

	int: function(opt, text) {
		if (!text || text.length > 10 || !allIn(text, DEC))
			throw new Bad(null);
		var n = parseInt(text, 10);
		if (opt.zero && n == 0)
			return 0;
		if ((opt.lo != null && n < opt.lo) || (opt.hi != null && n > opt.hi))
			throw new Bad(null);
		return n;
	},

	hex: function(opt, text) {
		if (!text || text.length > 8 || !allIn(text, HEX))
			throw new Bad(null);
		var n = parseInt(text, 16);
		if ((opt.lo != null && n < opt.lo) || (opt.hi != null && n > opt.hi))
			throw new Bad(null);
		return n;
	},

	enum: function(opt, text) {
		if (opt.choices.indexOf(text) >= 0)
			return text;
		throw new Bad(null);
	},

	ipv4: function(opt, text) {
		asciiOnly(text);
		try { return ip4Ntoa(ip4Aton(text)); } catch (e) { throw new Bad(null); }
	},

	ipv6: function(opt, text) {
		asciiOnly(text);
		try { return ip6Ntoa(ip6Aton(text)); } catch (e) { throw new Bad(null); }
	},

	ip6addr: function(opt, text) {
		asciiOnly(text);
		if (text.indexOf('/') < 0)
			throw new Bad(_('the prefix length is missing'));
		var bp = wrapAddr(function() { return parseAddr6Plen(text) });
		if (bp[1] < 1)
			throw new Bad(_('a /0 is not a link prefix'));
		return [ ip6Ntoa(bp[0]), bp[1] ];
	},

	prefix6: function(opt, text) {
		asciiOnly(text);
		try {
			var bp = parsePrefix6(text);
			return [ ip6Ntoa(bp[0]), bp[1] ];
		}
		catch (e) {
			if (!(e instanceof AddrError))
				throw e;
			var ap;
			try { ap = parseAddr6Plen(text); } catch (e2) { throw new Bad(null); }
			throw new Bad(_('bits set after the first %d; did you mean %s/%d?')
				.format(ap[1], ip6Ntoa(maskBytes(ap[0], ap[1])), ap[1]));
		}
	},

	prefix4: function(opt, text) {
		asciiOnly(text);
		try {
			var bp = parsePrefix4(text);
			return [ ip4Ntoa(bp[0]), bp[1] ];
		}
		catch (e) {
			if (!(e instanceof AddrError))
				throw e;
			var parts = text.split('/'), a = parts[0];
			if (text.indexOf('/') >= 0 && isIp4(a)) {
				var plen = pyInt(parts[1]);
				if (plen != null && plen >= 0 && plen <= 32)
					throw new Bad(_('bits set after the first %d; did you mean %s/%d?')
						.format(plen, ip4Ntoa(maskBytes(ip4Aton(a), plen)), plen));
			}
			throw new Bad(null);
		}
	},

	ifname: function(opt, text) {
		var n = utf8len(text);
		if (!text || n == null || n > 15 || text == '.' || text == '..')
			throw new Bad(null);
		for (var i = 0; i < text.length; i++) {
			var c = text.charAt(i);
			if ('/: '.indexOf(c) >= 0 || isControl(c) || /[\t\n\v\f\r]/.test(c) || PYSPACE.test(c))
				throw new Bad(null);
		}
		return text;
	},

	path: function(opt, text) {
		if (text.charAt(0) != '/' || cplen(text) > 4095 || hasControl(text))
			throw new Bad(null);
		return text;
	},

	url: function(opt, text) {
		var low = text.toLowerCase(), rest;
		if (low.indexOf('https://') == 0)
			rest = text.substring(8);
		else if (low.indexOf('http://') == 0)
			rest = text.substring(7);
		else
			throw new Bad(null);
		if (hasControl(text) || text.indexOf(' ') >= 0)
			throw new Bad(_('no spaces or control characters'));
		if (text.indexOf('@') >= 0)
			throw new Bad(_("put the account in 'username' and 'updatekey'/'password', not in the URL"));
		if (text.indexOf('?') >= 0 || text.indexOf('#') >= 0)
			throw new Bad(_('no ?parameters: cpe-tunnel adds them itself'));
		var slash = rest.indexOf('/'),
		    hostport = (slash < 0) ? rest : rest.substring(0, slash),
		    host = hostport,
		    port = null;
		if (hostport.charAt(0) == '[') {
			var close = hostport.indexOf(']');
			if (close < 0)
				throw new Bad(_('bad IPv6 address in brackets'));
			host = hostport.substring(0, close + 1);
			var after = hostport.substring(close + 1);
			if (after) {
				if (after.charAt(0) != ':')
					throw new Bad(_('bad port'));
				port = after.substring(1);
			}
		}
		else if (hostport.indexOf(':') >= 0) {
			var i = hostport.lastIndexOf(':');
			host = hostport.substring(0, i);
			port = hostport.substring(i + 1);
		}
		checkHost(host);
		if (port != null) {
			if (!port || port.length > 5 || !allIn(port, DEC) || !(+port >= 1 && +port <= 65535))
				throw new Bad(_('bad port'));
		}
		return text;
	},

	string: function(opt, text) {
		if (!text || cplen(text) > 256 || hasControl(text))
			throw new Bad(null);
		return text;
	}
};

/* 'expected ...' for an option, as the daemon words it */
function expectation(opt) {
	var e;
	switch (opt.kind) {
	case 'bool':
		e = _('expected a boolean (0 or 1)');
		break;
	case 'int':
		if (opt.lo == opt.hi)
			e = _('expected %d').format(opt.lo);
		else if (opt.zero)
			e = _('expected 0 or an integer from %d to %d').format(opt.lo, opt.hi);
		else
			e = _('expected an integer from %d to %d').format(opt.lo, opt.hi);
		break;
	case 'enum':
		e = _('expected one of: %s').format(opt.choices.join(', '));
		break;
	case 'ipv4':
		e = _('expected an IPv4 address like 192.0.2.1');
		break;
	case 'ipv6':
		e = _('expected an IPv6 address like 2001:db8::1');
		break;
	case 'ip6addr':
		e = _('expected an IPv6 address with prefix length like 2001:db8:1::2/64');
		break;
	case 'prefix6':
		e = _('expected an IPv6 prefix like 2001:db8:1234::/48');
		break;
	case 'prefix4':
		e = _('expected an IPv4 prefix like 198.51.100.0/24');
		break;
	case 'ifname':
		e = _("expected an interface name (1 to 15 characters; no spaces, '/' or ':')");
		break;
	case 'path':
		e = _('expected an absolute path like /var/run/cpe_tunnel');
		break;
	case 'url':
		e = _('expected an http:// or https:// URL like https://broker.example/nic/update');
		break;
	case 'hex':
		e = _('expected a hexadecimal number from %x to %x').format(opt.lo, opt.hi);
		break;
	default:
		e = _('expected text of 1 to 256 characters without control characters');
	}
	if (opt.why == 'slaac')
		e += ' (' + _('only a /64 supports SLAAC') + ')';
	return e;
}

var DETAIL_KINDS = [ 'ip6addr', 'prefix6', 'prefix4', 'url' ];

/* true, or the daemon's message for this value */
function check(opt, text) {
	if (typeof(text) != 'string')
		return expectation(opt);
	try {
		CHECK[opt.kind](opt, text);
		return true;
	}
	catch (e) {
		if (!(e instanceof Bad))
			throw e;
		if (e.detail && DETAIL_KINDS.indexOf(opt.kind) >= 0)
			return '%s (%s)'.format(expectation(opt), e.detail);
		return expectation(opt);
	}
}

/* the typed value (as the daemon would use it) or null when not valid */
function typed(opt, text) {
	if (typeof(text) != 'string' || text === '')
		return null;
	try { return CHECK[opt.kind](opt, text); } catch (e) { return null; }
}

/* ---------------------------------------------------------------- form helpers */

function inList(list, x) {
	return Array.isArray(list) && list.indexOf(x) >= 0;
}

function sameList(a, b) {
	return Array.isArray(a) && Array.isArray(b) && a.join(' ') == b.join(' ');
}

/* The current text of another option of the same section in the form (its
 * default when empty or not in the form). */
function current(o, section_id, section_type, name) {
	var v = null;
	try {
		v = o.section.formvalue(section_id, name);
	}
	catch (e) {
		v = null;
	}
	if (Array.isArray(v))
		return v;
	if (v == null || v === '') {
		var sp = spec(section_type, name);
		return (sp && sp.def != null) ? sp.def : '';
	}
	return String(v);
}

function currentInt(o, section_id, section_type, name) {
	var sp = spec(section_type, name),
	    v = typed(sp, current(o, section_id, section_type, name));
	return (typeof(v) == 'number') ? v : null;
}

/* Rules the daemon applies across options of one section (schema.py
 * _tunnel_checks / _lan_checks), reported on the option they concern: true or a
 * message. `mode` is the section's mode (tunnel sections). */
function crossCheck(o, section_id, section_type, name, value, mode) {
	var other, a6, gw, t;

	if (section_type == 'tunnel') {
		switch (name) {
		case 'updatekey':
			if (mode == 'http-update' && value === '' && current(o, section_id, 'tunnel', 'password') === '')
				return _('Mode http-update needs the update key (or the account password)');
			break;

		case 'update_retry_max':
			t = typed(spec('tunnel', name), value);
			other = currentInt(o, section_id, 'tunnel', 'update_retry_min');
			if (mode == 'http-update' && t != null && other != null && t < other)
				return _('must not be below the first retry delay (%d s)').format(other);
			break;

		case 'ip6gw':
			gw = typed(spec('tunnel', 'ip6gw'), value);
			a6 = typed(spec('tunnel', 'ip6addr'), current(o, section_id, 'tunnel', 'ip6addr'));
			if (gw != null && a6 != null) {
				var gb = ip6Aton(gw), ab = ip6Aton(a6[0]);
				if (sameBytes(gb, ab))
					return _('the same address as our side of the tunnel (IPv6 address)');
				if (!sameBytes(maskBytes(gb, a6[1]), maskBytes(ab, a6[1])))
					return _('not inside %s/%d, the prefix of our IPv6 address').format(a6[0], a6[1]);
			}
			break;

		case 'ip6prefix':
			t = typed(spec('tunnel', name), value);
			if (t != null && t[1] > 64)
				return _('a routed prefix must be /64 or shorter to give a LAN a /64');
			break;

		case 'ifname':
			other = current(o, section_id, 'tunnel', 'wan_device');
			if (value !== '' && value == other)
				return _('the same as the WAN device');
			break;
		}
	}
	else if (section_type == 'lan') {
		switch (name) {
		case 'ra_preferred':
			t = typed(spec('lan', name), value);
			other = currentInt(o, section_id, 'lan', 'ra_valid');
			if (t != null && other != null && t > other)
				return _('must not be above the valid lifetime (%d s)').format(other);
			break;

		case 'ra_lifetime':
			t = typed(spec('lan', name), value);
			other = currentInt(o, section_id, 'lan', 'ra_interval');
			if (t != null && other != null && t != 0 && t < other)
				return _('must be 0 or at least the RA interval (%d s, RFC 4861)').format(other);
			break;
		}
	}
	return true;
}

/* The validate function of a form option: the daemon's value check, whether the
 * option is required in the chosen mode, and the rules across options. */
function validator(section_type, sp) {
	return function(section_id, value) {
		var mode = (section_type == 'tunnel') ? current(this, section_id, 'tunnel', 'mode') : null;

		if (Array.isArray(value))
			value = value.length ? String(value[0]) : '';
		value = (value == null) ? '' : String(value);

		if (value === '') {
			if (sp.req === true || (Array.isArray(sp.req) && inList(sp.req, mode)))
				return (sp.req === true)
					? _('required')
					: _('required in mode %s').format(mode);
		}
		else {
			var r = check(sp, value);
			if (r !== true)
				return r;
		}
		return crossCheck(this, section_id, section_type, sp.name, value, mode);
	};
}

/* Booleans the daemon accepts besides 0/1, so a hand-edited 'yes' shows checked */
function flagCfgvalue(section_id) {
	var v = form.Flag.prototype.cfgvalue.apply(this, arguments);
	if (v == null)
		return v;
	var t = typed({ kind: 'bool' }, String(v));
	return (t === true) ? '1' : (t === false) ? '0' : v;
}

/* The options an ISP's provisioning locked in a tunnel section (list locked) */
function lockedOptions(config, section_id) {
	return L.toArray(uci.get(config, section_id, 'locked'));
}

/* o shown read-only and never written where the section's `list locked` names it */
function guardLocked(o, config) {
	var renderWidget = o.renderWidget,
	    write = o.write,
	    remove = o.remove;

	o.renderWidget = function(section_id, option_index, cfgvalue) {
		if (!inList(lockedOptions(config, section_id), this.option))
			return renderWidget.apply(this, arguments);
		var saved = this.readonly, node;
		this.readonly = true;
		try {
			node = renderWidget.apply(this, arguments);
		}
		finally {
			this.readonly = saved;
		}
		return E('div', { 'class': 'cpe-tunnel-locked' }, [
			node,
			E('div', { 'class': 'cbi-value-description' }, [ _('Set by your Internet provider; read-only.') ])
		]);
	};
	o.write = function(section_id) {
		if (inList(lockedOptions(config, section_id), this.option))
			return;
		return write.apply(this, arguments);
	};
	o.remove = function(section_id) {
		if (inList(lockedOptions(config, section_id), this.option))
			return;
		return remove.apply(this, arguments);
	};
	o.cpeLockable = true;
	return o;
}

/* Adds option `name` of `section_type` to form section s (on tab `tab` when given)
 * with the widget, checks, depends, placeholder and masking its schema entry asks
 * for. extra: { labels: {choice: label}, placeholder: what empty means (options
 * without a default), locked: config name } */
function addOption(s, section_type, tab, name, title, description, extra) {
	var sp = spec(section_type, name), o, cls, i;
	extra = extra || {};

	if (!sp)
		throw new Error('cpe_tunnel: no option ' + section_type + '.' + name);

	if (sp.kind == 'bool')
		cls = form.Flag;
	else if (sp.kind == 'enum')
		cls = form.ListValue;
	else if (sp.list)
		cls = form.DynamicList;
	else
		cls = form.Value;

	o = tab ? s.taboption(tab, cls, name, title, description) : s.option(cls, name, title, description);

	if (sp.kind == 'bool') {
		o.enabled = '1';
		o.disabled = '0';
		o.default = sp.def;
		o.cfgvalue = flagCfgvalue;
	}
	else if (sp.kind == 'enum') {
		for (i = 0; i < sp.choices.length; i++)
			o.value(sp.choices[i], (extra.labels && extra.labels[sp.choices[i]]) || sp.choices[i]);
		if (sp.def != null)
			o.default = sp.def;
	}
	else {
		o.validate = validator(section_type, sp);
		/* the default; else what an empty field means (extra.placeholder); else,
		 * for a required field or a list, an example of the format */
		if (sp.def != null)
			o.placeholder = sp.def;
		else if (extra.placeholder != null)
			o.placeholder = extra.placeholder;
		else if (sp.ex != null && !sp.secret && (sp.req || sp.list))
			o.placeholder = sp.ex;
		if (sp.secret)
			o.password = true;
	}

	/* required in every mode that uses it: LuCI's own "non-empty" rule; required
	 * in only some of its modes: the validator asks for it there */
	o.rmempty = !(sp.req === true || (Array.isArray(sp.req) && sameList(sp.req, sp.modes)));

	if (sp.modes && section_type == 'tunnel')
		for (i = 0; i < sp.modes.length; i++)
			o.depends('mode', sp.modes[i]);

	if (extra.locked)
		guardLocked(o, extra.locked);

	o.cpeKind = sp.kind;
	return o;
}

return baseclass.extend({
	MODES: MODES,
	OPTIONS: OPTIONS,
	spec: spec,
	check: check,
	typed: typed,
	expectation: expectation,
	validator: validator,
	addOption: addOption,
	lockedOptions: lockedOptions,
	ip6Ntoa: ip6Ntoa,
	ip6Aton: ip6Aton
});
