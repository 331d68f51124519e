'use strict';
'require form';
'require network';
'require tools.widgets as widgets';
'require cpe_tunnel.common as common';

/*
 * Protocol "cpetunnel" under Network > Interfaces, like 6in4 or WireGuard: the
 * netifd handler /lib/netifd/proto/cpetunnel.sh (package cpe-tunnel) writes the
 * daemon's configuration from these interface options and starts cpe-tunneld for
 * the interface; the tunnel device is cpe-<interface>. The options are the
 * handler's (cpe_tunnel/netifd_schema.py: the tunnel options less enabled,
 * ifname, wan_device, defaultroute and locked, plus log_level and tunlink), with
 * the same checks as the daemon. The prefix goes to odhcpd through netifd, so
 * there are no LAN options here.
 */

network.registerPatternVirtual(/^cpe-.+$/);

return network.registerProtocol('cpetunnel', {
	getI18n: function() {
		return _('IPv6 tunnel broker (cpe-tunnel)');
	},

	getIfname: function() {
		return this._ubus('l3_device') || ('cpe-' + this.sid).substring(0, 15);
	},

	getOpkgPackage: function() {
		return 'cpe-tunnel';
	},

	isFloating: function() {
		return true;
	},

	isVirtual: function() {
		return true;
	},

	getDevices: function() {
		return null;
	},

	containsDevice: function(ifname) {
		return (network.getIfnameOf(ifname) == this.getIfname());
	},

	renderFormOptions: function(s) {
		var o;
		var add = function(tab, name, title, description, extra) {
			return common.addOption(s, 'tunnel', tab, name, title, description, extra);
		};

		add('general', 'mode', _('Protocol'), _('How the tunnel is set up and kept current.'), { labels: {
			'http-update': _('6in4, endpoint kept current with the HTTP update API (tunnelbroker.net)'),
			'static': _('6in4 with fixed endpoints'),
			'tsp': _('TSP broker (RFC 5572): 6in4, or IPv6 in UDP through a NAT'),
			'tic': _('SixXS-style TIC server: 6in4, heartbeat or AYIYA')
		} });
		add('general', 'peeraddr', _('Broker IPv4 address'),
			_('The broker\'s tunnel endpoint ("Server IPv4 Address" on tunnelbroker.net).'));
		add('general', 'ip6addr', _('Local IPv6 address'),
			_('Our side of the tunnel with its prefix length ("Client IPv6 Address").'));
		add('general', 'ip6gw', _('Broker IPv6 address'),
			_('The broker\'s side of the tunnel ("Server IPv6 Address"). Empty: derived from the local IPv6 address.'),
			{ placeholder: _('derived') });
		add('general', 'ip6prefix', _('Routed prefixes'),
			_('Prefixes the broker routes to you; odhcpd hands /64s from them to the LAN interfaces (ip6assign).'));
		add('general', 'server', _('Broker servers'),
			_('TSP broker or TIC server: host name or IPv4 address, optionally with :port. Tried in order.'));
		add('general', 'username', _('Username'),
			_('Account name at the broker. TSP: leave empty for anonymous access.'));
		add('general', 'updatekey', _('Update key'),
			_('The tunnel\'s update key (tunnelbroker.net: Advanced tab); used instead of the account password.'));
		add('general', 'password', _('Password'),
			_('Account password. HTTP update: only needed when no update key is set.'));
		add('general', 'tunnelid', _('Tunnel ID'),
			_('The broker\'s ID of this tunnel (TIC: e.g. T12345, needed when the account has several tunnels).'));
		add('general', 'ipaddr', _('Local IPv4 address'),
			_('Empty: the address of the WAN. Behind a NAT the broker is told the public address.'),
			{ placeholder: _('WAN address') });

		o = s.taboption('advanced', widgets.NetworkSelect, 'tunlink', _('Bind interface'),
			_('The WAN interface whose IPv4 address is the tunnel endpoint. Unspecified: the IPv4 default route.'));
		o.exclude = s.section;
		o.nocreate = true;

		add('advanced', 'update_url', _('Update URL'),
			_('Endpoint update URL of the broker, without credentials or parameters.'));
		add('advanced', 'send_myip', _('Tell the broker our IPv4 address'),
			_('Behind a NAT the broker must take the address it sees the update come from.'), { labels: {
				'auto': _('automatic: only when not behind a NAT'),
				'always': _('always'),
				'never': _('never: the broker uses the source address')
			} });
		add('advanced', 'tls_verify', _('Verify the broker\'s TLS certificate'));
		add('advanced', 'ca_file', _('CA bundle'), _('Certificates for the TLS check. Empty: the system default.'),
			{ placeholder: _('system default') });
		add('advanced', 'update_retry_min', _('First retry delay'), _('Seconds after a failed endpoint update.'));
		add('advanced', 'update_retry_max', _('Longest retry delay'), _('Seconds; retries back off up to this.'));
		add('advanced', 'tic_tls', _('TLS on the TIC connection'), null, { labels: {
			'try': _('when the server offers it'),
			'require': _('required'),
			'never': _('never')
		} });
		add('advanced', 'auth', _('TSP authentication'), null, { labels: {
			'any': _('the strongest the broker offers'),
			'anonymous': _('anonymous'),
			'plain': _('plain password')
		} });
		add('advanced', 'tunnel_mode', _('TSP tunnel type'), null, { labels: {
			'v6anyv4': _('6in4, or IPv6 in UDP when the broker sees a NAT'),
			'v6v4': _('6in4 only'),
			'v6udpv4': _('IPv6 in UDP only')
		} });
		add('advanced', 'host_type', _('Ask the TSP broker for'), null, { labels: {
			'router': _('a prefix for the LANs'),
			'host': _('an address for this router only')
		} });
		add('advanced', 'prefix_len', _('Prefix length to ask for'), _('For example 48 or 56; 0: the broker\'s choice.'));
		add('advanced', 'tsp_transport', _('TSP transport'), null, { labels: {
			'auto': _('UDP, TCP when UDP gets no answer')
		} });
		add('advanced', 'private_range', _('Also behind a NAT'),
			_('Extra IPv4 ranges to treat as private, e.g. when the ISP uses public addresses inside its network.'));
		add('advanced', 'dataplane', _('Data plane'), null, { labels: {
			'auto': _('automatic: kernel when available'),
			'kernel': _('kernel (sit)'),
			'userspace': _('userspace (TUN device)')
		} });
		add('advanced', 'mtu', _('MTU'));
		add('advanced', 'ttl', _('TTL'), _('Of the outer IPv4 header.'));
		add('advanced', 'tos', _('TOS'), _('Of the outer IPv4 header.'));
		add('advanced', 'keepalive_interval', _('Keepalive interval'),
			_('Seconds between keepalive echoes through the tunnel; they keep NAT state alive and find a dead tunnel. 0 turns them off.'));
		common.addOption(s, 'globals', 'advanced', 'log_level', _('Log level'),
			_('Least important messages that go to the system log.'));
	}
});
