'use strict';
'require view';
'require form';
'require uci';
'require cpe_tunnel.common as common';

/*
 * Network > IPv6 Tunnel > Configuration: a form over /etc/config/cpe_tunnel.
 *
 * Each option's widget, checks, default (shown as placeholder) and the modes it
 * applies to come from common.OPTIONS, the copy of the daemon's schema; this file
 * adds the words. Options of the other modes are hidden (depends on 'mode') and,
 * as LuCI does with hidden options, removed on save. Options an ISP's provisioning
 * listed in `list locked` are shown read-only and never written. Saving and
 * applying commits the file; procd's reload trigger on the cpe_tunnel package
 * then sends the daemon SIGHUP, and the daemon re-reads it (a file with problems
 * is refused and the problems show on the Status tab).
 */

var CONFIG = 'cpe_tunnel';

return view.extend({
	render: function() {
		var m, s, o;

		m = new form.Map(CONFIG, _('IPv6 tunnel'),
			_('IPv6 for your network from a tunnel broker. The daemon checks this configuration again when it is applied; problems show on the Status page.'));

		/* ---- the service ---- */

		s = m.section(form.NamedSection, 'main', 'globals', _('Service'));
		s.anonymous = true;
		s.addremove = true;

		common.addOption(s, 'globals', null, 'enabled', _('Run the service'),
			_('Start cpe-tunneld with this configuration. Not needed for interfaces of protocol "IPv6 tunnel broker" under Network > Interfaces: netifd starts those itself.'));
		common.addOption(s, 'globals', null, 'log_level', _('Log level'),
			_('Least important messages that go to the system log.'));
		common.addOption(s, 'globals', null, 'control_socket', _('Control socket'),
			_('Used by the cpe-tunnel command when ubus is not available.'));
		common.addOption(s, 'globals', null, 'state_dir', _('State directory'),
			_('Runtime state, such as the last endpoint update.'));

		/* ---- the tunnel ---- */

		s = m.section(form.TypedSection, 'tunnel', _('Tunnel'),
			_('One tunnel to a tunnel broker. Exactly one tunnel section must be enabled.'));
		s.addremove = true;
		s.anonymous = false;
		s.addbtntitle = _('Add tunnel');
		s.tab('general', _('General settings'));
		s.tab('broker', _('Broker'));
		s.tab('advanced', _('Advanced settings'));

		var add = function(tab, name, title, description, extra) {
			return common.addOption(s, 'tunnel', tab, name, title, description,
				Object.assign({ locked: CONFIG }, extra));
		};

		o = s.taboption('general', form.DummyValue, '_locked', _('Set by your Internet provider'));
		o.cfgvalue = function(section_id) {
			return common.lockedOptions(CONFIG, section_id).join(', ');
		};
		o.render = function(option_index, section_id) {
			if (!common.lockedOptions(CONFIG, section_id).length)
				return E([]);
			return form.DummyValue.prototype.render.apply(this, arguments);
		};

		add('general', 'enabled', _('Enable this tunnel'));
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
			_('Prefixes the broker routes to you ("Routed /64", "Routed /48"); each LAN gets a /64 from them.'));
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

		add('broker', 'update_url', _('Update URL'),
			_('Endpoint update URL of the broker, without credentials or parameters.'));
		add('broker', 'send_myip', _('Tell the broker our IPv4 address'),
			_('Behind a NAT the broker must take the address it sees the update come from.'), { labels: {
				'auto': _('automatic: only when not behind a NAT'),
				'always': _('always'),
				'never': _('never: the broker uses the source address')
			} });
		add('broker', 'tls_verify', _('Verify the broker\'s TLS certificate'));
		add('broker', 'ca_file', _('CA bundle'), _('Certificates for the TLS check. Empty: the system default.'),
			{ placeholder: _('system default') });
		add('broker', 'update_retry_min', _('First retry delay'), _('Seconds after a failed endpoint update.'));
		add('broker', 'update_retry_max', _('Longest retry delay'), _('Seconds; retries back off up to this.'));
		add('broker', 'tic_tls', _('TLS on the TIC connection'), null, { labels: {
			'try': _('when the server offers it'),
			'require': _('required'),
			'never': _('never')
		} });
		add('broker', 'auth', _('TSP authentication'), null, { labels: {
			'any': _('the strongest the broker offers'),
			'anonymous': _('anonymous'),
			'plain': _('plain password')
		} });
		add('broker', 'tunnel_mode', _('TSP tunnel type'), null, { labels: {
			'v6anyv4': _('6in4, or IPv6 in UDP when the broker sees a NAT'),
			'v6v4': _('6in4 only'),
			'v6udpv4': _('IPv6 in UDP only')
		} });
		add('broker', 'host_type', _('Ask the TSP broker for'), null, { labels: {
			'router': _('a prefix for the LANs'),
			'host': _('an address for this router only')
		} });
		add('broker', 'prefix_len', _('Prefix length to ask for'), _('For example 48 or 56; 0: the broker\'s choice.'));
		add('broker', 'tsp_transport', _('TSP transport'), null, { labels: {
			'auto': _('UDP, TCP when UDP gets no answer')
		} });

		add('advanced', 'wan_device', _('WAN device'),
			_('Device whose IPv4 address is our tunnel endpoint. Empty: the device of the IPv4 default route.'),
			{ placeholder: _('default route') });
		add('advanced', 'ipaddr', _('Local IPv4 address'),
			_('Empty: the address of the WAN device. Behind a NAT the broker is told the public address.'),
			{ placeholder: _('WAN address') });
		add('advanced', 'private_range', _('Also behind a NAT'),
			_('Extra IPv4 ranges to treat as private, e.g. when the ISP uses public addresses inside its network.'));
		add('advanced', 'ifname', _('Tunnel interface name'));
		add('advanced', 'dataplane', _('Data plane'), null, { labels: {
			'auto': _('automatic: kernel when available'),
			'kernel': _('kernel (sit)'),
			'userspace': _('userspace (TUN device)')
		} });
		add('advanced', 'mtu', _('MTU'));
		add('advanced', 'ttl', _('TTL'), _('Of the outer IPv4 header.'));
		add('advanced', 'tos', _('TOS'), _('Of the outer IPv4 header.'));
		add('advanced', 'defaultroute', _('Default route'), _('Add an IPv6 default route through the tunnel.'));
		add('advanced', 'keepalive_interval', _('Keepalive interval'),
			_('Seconds between keepalive echoes through the tunnel; they keep NAT state alive and find a dead tunnel. 0 turns them off.'));

		/* ---- the LANs ---- */

		s = m.section(form.TypedSection, 'lan', _('LAN interfaces'),
			_('Each LAN gets a /64 from the routed prefix and Router Advertisements, so its hosts configure themselves (SLAAC).'));
		s.addremove = true;
		s.anonymous = true;
		s.addbtntitle = _('Add LAN');

		common.addOption(s, 'lan', null, 'enabled', _('Enabled'));
		common.addOption(s, 'lan', null, 'interface', _('LAN device'), _('For example the bridge br-lan.'));
		common.addOption(s, 'lan', null, 'ip6hint', _('Subnet number'),
			_('Which /64 of the routed prefix to use (hexadecimal). Empty: the next free one.'),
			{ placeholder: _('next free') });
		common.addOption(s, 'lan', null, 'ip6assign', _('Prefix length'), _('Only a /64 supports SLAAC.'));
		common.addOption(s, 'lan', null, 'ra', _('Send Router Advertisements'));
		o = common.addOption(s, 'lan', null, 'ra_interval', _('RA interval'),
			_('Longest time between unsolicited Router Advertisements, in seconds.'));
		o.depends('ra', '1');
		o = common.addOption(s, 'lan', null, 'ra_lifetime', _('Router lifetime'),
			_('Seconds; 0: do not act as default router.'));
		o.depends('ra', '1');
		o = common.addOption(s, 'lan', null, 'ra_mtu', _('Advertised MTU'), _('0: the tunnel MTU.'));
		o.depends('ra', '1');
		o = common.addOption(s, 'lan', null, 'ra_preferred', _('Preferred lifetime'), _('Of the prefix, in seconds.'));
		o.depends('ra', '1');
		o = common.addOption(s, 'lan', null, 'ra_valid', _('Valid lifetime'), _('Of the prefix, in seconds.'));
		o.depends('ra', '1');
		o = common.addOption(s, 'lan', null, 'dns', _('DNS servers'), _('Announced to the hosts (RDNSS, RFC 8106).'));
		o.depends('ra', '1');

		return m.render();
	}
});
