'use strict';
'require network';
'require tools.widgets as widgets';
'require cpe_tunnel.common as common';

/*
 * Protocol "cpetunnel" under Network > Interfaces, like 6in4 or WireGuard: the
 * netifd handler /lib/netifd/proto/cpetunnel.sh (package cpe-tunnel) writes the
 * daemon's configuration from these interface options and starts cpe-tunneld for
 * the interface; the tunnel device is cpe-<interface>. The options are the
 * handler's (common.NETIFD, generated from cpe_tunnel/netifd_schema.py: the
 * tunnel options less enabled, ifname, wan_device, defaultroute and locked, plus
 * log_level; and tunlink, added here), built by common.addOptions as on the
 * Configuration page: the same widgets, words and checks as the daemon. The
 * prefix goes to odhcpd through netifd, so there are no LAN options here.
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
		/* handler only: the logical WAN interface, first on the advanced tab */
		var o = s.taboption('advanced', widgets.NetworkSelect, 'tunlink', _('Bind interface'),
			_('The WAN interface whose IPv4 address is the tunnel endpoint. Unspecified: the IPv4 default route.'));
		o.exclude = s.section;
		o.nocreate = true;

		common.addOptions(s, 'tunnel', { netifd: true });
		common.addOptions(s, 'globals', { netifd: true });
	}
});
