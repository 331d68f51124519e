'use strict';
'require view';
'require form';
'require cpe_tunnel.common as common';

/*
 * Network > IPv6 Tunnel > Configuration: a form over /etc/config/cpe_tunnel.
 *
 * The fields are built by common.addOptions: each option's widget, checks,
 * default (shown as placeholder) and the modes it applies to come from
 * common.OPTIONS, generated from the daemon's schema, and its words from
 * common.fields(), shared with the protocol plugin. This file lays out the sections
 * and tabs. Options of the other modes are hidden (depends on 'mode') and,
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

		common.addOptions(s, 'globals');

		/* ---- the tunnel ---- */

		s = m.section(form.TypedSection, 'tunnel', _('Tunnel'),
			_('One tunnel to a tunnel broker. Exactly one tunnel section must be enabled.'));
		s.addremove = true;
		s.anonymous = false;
		s.addbtntitle = _('Add tunnel');
		s.tab('general', _('General settings'));
		s.tab('broker', _('Broker'));
		s.tab('advanced', _('Advanced settings'));

		o = s.taboption('general', form.DummyValue, '_locked', _('Set by your Internet provider'));
		o.cfgvalue = function(section_id) {
			return common.lockedOptions(CONFIG, section_id).join(', ');
		};
		o.render = function(option_index, section_id) {
			if (!common.lockedOptions(CONFIG, section_id).length)
				return E([]);
			return form.DummyValue.prototype.render.apply(this, arguments);
		};

		common.addOptions(s, 'tunnel', { locked: CONFIG });

		/* ---- the LANs ---- */

		s = m.section(form.TypedSection, 'lan', _('LAN interfaces'),
			_('Each LAN gets a /64 from the routed prefix and Router Advertisements, so its hosts configure themselves (SLAAC).'));
		s.addremove = true;
		s.anonymous = true;
		s.addbtntitle = _('Add LAN');

		common.addOptions(s, 'lan');

		return m.render();
	}
});
